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

/* What Vp8Munger.rewrite changes in one payload: the picture ID and TL0PICIDX bytes (a
 * position of -1: left as it is). */
typedef struct {
    int pid_pos, pid_bits, pid;
    int tl0_pos, tl0;
} Vp8Patch;

/* A cache slot holding a packet as its parts: the payload object the producer received (shared
 * by every consumer of that packet, so a forwarded packet allocates nothing), the 12-byte
 * header this consumer sent it with, and the VP8 rewrite applied to the payload. */
typedef struct {
    int shared; /* 0: packets[i] is the whole packet */
    unsigned char header[12];
    Vp8Patch patch;
} CacheParts;

/* sfu.media.packet_cache.PacketCache */
typedef struct {
    PyObject_HEAD
    Py_ssize_t size;
    long *seqs;         /* -1: empty slot */
    PyObject **packets; /* owned references (NULL: empty): the packet, or its payload (parts) */
    double *resent_ms;
    CacheParts *parts;
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
/* The same state change as vp8_rewrite, the change itself in *patch: 1, or 0 when the payload
 * is sent as it is. vp8_apply makes it on a copy of the payload. */
int vp8_plan(Vp8Object *v, const unsigned char *p, Py_ssize_t n, Vp8Patch *patch);
void vp8_apply(unsigned char *payload, const Vp8Patch *patch);
/* PacketCache.put: the cache takes its own new reference to packet (the caller keeps its). */
void cache_put(CacheObject *c, long seq, PyObject *packet);
/* PacketCache.put of header + payload (bytes) with patch applied, kept as those parts: get()
 * builds the same bytes. */
void cache_put_parts(CacheObject *c, long seq, PyObject *payload, const unsigned char header[12], const Vp8Patch *patch);
/* The packet of such parts into out (12 + n bytes): what PacketCache.get gives back for them. */
void write_parts(unsigned char *out, const unsigned char header[12], const unsigned char *payload, Py_ssize_t n,
                 const Vp8Patch *patch);
/* SendHistory.add */
void history_add(HistoryObject *h, long seq, double send_ms, long size);

/* Adds RtpMunger, Vp8Munger, PacketCache, SendHistory to the module; -1 on error. */
int media_add_types(PyObject *module);

#endif
