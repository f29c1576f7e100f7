/* Compiled twins of the per-stream state in sfu/media (munger.py, vp8.py, packet_cache.py)
 * and sfu/bwe/estimator.py's SendHistory: each a Python type with exactly the reference
 * class's methods and public attributes, and C functions the forwarding loop in _fastpath.c
 * calls without going through Python. _media.c implements them; _fastpath.c's module init
 * calls media_add_types().
 */
#ifndef SFU_MEDIA_H
#define SFU_MEDIA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* sfu.media.munger.RtpMunger */
typedef struct {
    PyObject_HEAD
    long long highest_ext_seq, seq_offset, skipped_ext_seq, start_ext_seq;
    uint32_t ts_offset;
    uint16_t last_seq;
    uint32_t last_ts;
    int started;
} MungerObject;

/* sfu.media.vp8.Vp8Munger */
typedef struct {
    PyObject_HEAD
    int pid_offset, tl0_offset, last_pid, last_tl0, started, pending;
} Vp8Object;

/* sfu.media.packet_cache.PacketCache */
typedef struct {
    PyObject_HEAD
    Py_ssize_t size;
    long *seqs;         /* -1: empty slot */
    PyObject **packets; /* owned references (NULL: empty) */
    double *resent_ms;
} CacheObject;

/* sfu.bwe.estimator.SendHistory (with its SeqUnwrapper) */
typedef struct {
    PyObject_HEAD
    Py_ssize_t size;
    long long highest; /* the unwrapper's highest extended seq, -1 before the first */
    long long *ext;    /* LLONG_MIN: empty (an extended seq of -1 is possible from a negative seq) */
    double *send_ms;
    long *sizes;
} HistoryObject;

extern PyTypeObject MungerType, Vp8Type, CacheType, HistoryType;

/* RtpMunger.map: 1 and the outgoing (seq, ts), or 0 to drop. |ext_seq| < 2**62. */
int munger_map(MungerObject *m, long long ext_seq, uint32_t timestamp, uint16_t *out_seq, uint32_t *out_ts);
/* Vp8Munger.rewrite: a new reference to the payload to send (the same object when unchanged). */
PyObject *vp8_rewrite(Vp8Object *v, PyObject *payload);
/* PacketCache.put: the cache takes its own new reference to packet (the caller keeps its). */
void cache_put(CacheObject *c, long seq, PyObject *packet);
/* SendHistory.add */
void history_add(HistoryObject *h, long seq, double send_ms, long size);

/* Adds RtpMunger, Vp8Munger, PacketCache, SendHistory to the module; -1 on error. */
int media_add_types(PyObject *module);

#endif
