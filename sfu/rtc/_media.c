/* Compiled twins of sfu/media/munger.py RtpMunger, sfu/media/vp8.py Vp8Munger,
 * sfu/media/packet_cache.py PacketCache and sfu/bwe/estimator.py SendHistory (with the
 * SeqUnwrapper of sfu/media/seq.py inline): the same constructor arguments, methods, return
 * values and public (read-only) attributes, call for call (tests/unit/test_media_twins.py
 * compares each with its reference). The C functions of _media.h are what the methods use, and
 * what the forwarding loop of _fastpath.c calls directly.
 *
 * Where Python's unbounded ints meet C integers:
 * - 16- and 32-bit values (sequence numbers, timestamps) are reduced with Python's own masks
 *   (x & 0xFFFF, x & 0xFFFFFFFF) from any int;
 * - extended sequence numbers (RtpMunger, SendHistory) are 64-bit: beyond +-2**62 they raise
 *   OverflowError (the references would go on; no caller comes near);
 * - PacketCache slots are seq % size with Python's floor modulo (a negative seq has a slot as
 *   in the reference); seqs are C longs;
 * - sizes < 1 raise ValueError at construction (the references fail at the first use);
 * - times (resent_ms, send_ms) are stored as C doubles: an int given comes back as a float.
 */
#include "_media.h"

#include <limits.h>
#include <string.h>

#define EXT_LIMIT (1LL << 62)
#define NEVER_RESENT (-1e18)
#define HISTORY_EMPTY LLONG_MIN

/* The low 64 bits of any int (then masked to 16 or 32 bits, as Python's & does). */
static int low_bits(PyObject *o, unsigned long long *out)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "an integer is required, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* An extended sequence number within +-2**62. */
static int ext_arg(PyObject *o, long long *out)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "an integer is required, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v >= EXT_LIMIT || v <= -EXT_LIMIT) {
        PyErr_SetString(PyExc_OverflowError, "extended sequence number out of range (+-2**62)");
        return -1;
    }
    *out = v;
    return 0;
}

/* A C long (PacketCache seqs, sizes), OverflowError beyond. */
static int long_arg(PyObject *o, long *out)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "an integer is required, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int double_arg(PyObject *o, double *out)
{
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* The arguments of a METH_FASTCALL | METH_KEYWORDS method, by position or by name, into
 * out[0..nmax) (NULL for an optional one not given): Python's own rules for a def. */
static int fast_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     const char *const *names, Py_ssize_t nreq, Py_ssize_t nmax, PyObject **out)
{
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", fname, nmax, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nmax; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < nmax && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == nmax) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < nreq; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

/* Python's floor modulo for a positive size. */
static Py_ssize_t slot_of(long long seq, Py_ssize_t size)
{
    long long i = seq % (long long)size;
    if (i < 0)
        i += size;
    return (Py_ssize_t)i;
}

/* ---------------------------------------------------------------- RtpMunger */

int munger_map(MungerObject *m, long long ext_seq, uint32_t timestamp, uint16_t *out_seq, uint32_t *out_ts)
{
    if (ext_seq < m->start_ext_seq || ext_seq < m->skipped_ext_seq)
        return 0; /* before the (re)start, or a late packet from before a skip */
    uint16_t seq = (uint16_t)((unsigned long long)(ext_seq + m->seq_offset) & 0xFFFF);
    uint32_t ts = (uint32_t)(timestamp + m->ts_offset);
    if (ext_seq > m->highest_ext_seq) {
        m->highest_ext_seq = ext_seq;
        m->last_seq = seq;
        uint32_t d = (uint32_t)(ts - m->last_ts);
        if (d > 0 && d < 0x80000000u)
            m->last_ts = ts;
    }
    *out_seq = seq;
    *out_ts = ts;
    return 1;
}

static int Munger_init(MungerObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"initial_seq", "initial_ts", NULL};
    PyObject *seq_o, *ts_o;
    unsigned long long seq, ts;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:RtpMunger", kwlist, &seq_o, &ts_o))
        return -1;
    if (low_bits(seq_o, &seq) < 0 || low_bits(ts_o, &ts) < 0)
        return -1;
    self->last_seq = (uint16_t)((seq - 1) & 0xFFFF);
    self->last_ts = (uint32_t)(ts & 0xFFFFFFFF);
    self->seq_offset = 0;
    self->ts_offset = 0;
    self->start_ext_seq = -1;
    self->highest_ext_seq = -1;
    self->skipped_ext_seq = -1;
    self->started = 0;
    return 0;
}

static PyObject *Munger_start(MungerObject *self, PyObject *const *fargs, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"ext_seq", "timestamp", "ts_gap"};
    PyObject *args[3];
    long long ext_seq;
    unsigned long long ts;
    if (fast_args("start", fargs, nargs, kwnames, names, 3, 3, args) < 0 ||
        ext_arg(args[0], &ext_seq) < 0 || low_bits(args[1], &ts) < 0)
        return NULL;
    if (!PyLong_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "an integer is required, not %.100s", Py_TYPE(args[2])->tp_name);
        return NULL;
    }
    /* max(1, ts_gap), then only its low 32 bits matter */
    int overflow = 0;
    long long gap = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (gap == -1 && PyErr_Occurred())
        return NULL;
    uint32_t gap32;
    if (overflow > 0)
        gap32 = (uint32_t)(PyLong_AsUnsignedLongLongMask(args[2]) & 0xFFFFFFFF);
    else if (overflow < 0 || gap < 1)
        gap32 = 1;
    else
        gap32 = (uint32_t)((unsigned long long)gap & 0xFFFFFFFF);
    long long out_seq = (long long)self->last_seq + 1;
    uint32_t out_ts = self->started ? (uint32_t)(self->last_ts + gap32) : self->last_ts;
    self->seq_offset = out_seq - ext_seq;
    self->ts_offset = (uint32_t)(out_ts - (uint32_t)ts);
    self->start_ext_seq = ext_seq;
    self->highest_ext_seq = ext_seq - 1;
    self->skipped_ext_seq = -1;
    self->started = 1;
    Py_RETURN_NONE;
}

static PyObject *Munger_map(MungerObject *self, PyObject *const *fargs, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"ext_seq", "timestamp"};
    PyObject *args[2];
    long long ext_seq;
    unsigned long long ts;
    uint16_t out_seq;
    uint32_t out_ts;
    if (fast_args("map", fargs, nargs, kwnames, names, 2, 2, args) < 0 ||
        ext_arg(args[0], &ext_seq) < 0 || low_bits(args[1], &ts) < 0)
        return NULL;
    if (!munger_map(self, ext_seq, (uint32_t)ts, &out_seq, &out_ts))
        Py_RETURN_NONE;
    return Py_BuildValue("(Hk)", out_seq, (unsigned long)out_ts);
}

static PyObject *Munger_skip(MungerObject *self, PyObject *const *fargs, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"ext_seq"};
    PyObject *arg;
    if (fast_args("skip", fargs, nargs, kwnames, names, 1, 1, &arg) < 0)
        return NULL;
    long long ext_seq;
    if (ext_arg(arg, &ext_seq) < 0)
        return NULL;
    if (self->started && ext_seq == self->highest_ext_seq + 1) {
        self->highest_ext_seq = ext_seq;
        self->skipped_ext_seq = ext_seq;
        self->seq_offset -= 1;
    }
    Py_RETURN_NONE;
}

static PyObject *Munger_reverse(MungerObject *self, PyObject *const *fargs, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"out_seq"};
    PyObject *arg;
    if (fast_args("reverse", fargs, nargs, kwnames, names, 1, 1, &arg) < 0)
        return NULL;
    unsigned long long out_seq;
    if (low_bits(arg, &out_seq) < 0)
        return NULL;
    if (!self->started || self->highest_ext_seq < self->start_ext_seq)
        Py_RETURN_NONE;
    long long d = (long long)((out_seq - self->last_seq) & 0xFFFF);
    if (d >= 0x8000)
        d -= 0x10000;
    long long ext_seq = self->highest_ext_seq + d;
    if (ext_seq < self->start_ext_seq || ext_seq > self->highest_ext_seq || ext_seq <= self->skipped_ext_seq)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(ext_seq);
}

static PyObject *Munger_out_timestamp(MungerObject *self, PyObject *const *fargs, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"timestamp"};
    PyObject *arg;
    if (fast_args("out_timestamp", fargs, nargs, kwnames, names, 1, 1, &arg) < 0)
        return NULL;
    unsigned long long ts;
    if (low_bits(arg, &ts) < 0)
        return NULL;
    return PyLong_FromUnsignedLong((unsigned long)(uint32_t)((uint32_t)ts + self->ts_offset));
}

static PyObject *Munger_get_last_seq(MungerObject *self, void *closure)
{
    return PyLong_FromLong(self->last_seq);
}

static PyObject *Munger_get_last_ts(MungerObject *self, void *closure)
{
    return PyLong_FromUnsignedLong(self->last_ts);
}

static PyObject *Munger_get_started(MungerObject *self, void *closure)
{
    return PyBool_FromLong(self->started);
}

static PyMethodDef Munger_methods[] = {
    {"start", (PyCFunction)(void (*)(void))Munger_start, METH_FASTCALL | METH_KEYWORDS,
     "start(ext_seq, timestamp, ts_gap): (re)start on this incoming packet."},
    {"map", (PyCFunction)(void (*)(void))Munger_map, METH_FASTCALL | METH_KEYWORDS,
     "map(ext_seq, timestamp) -> (seq, timestamp) to send, or None to drop."},
    {"skip", (PyCFunction)(void (*)(void))Munger_skip, METH_FASTCALL | METH_KEYWORDS,
     "skip(ext_seq): leave out the next incoming packet."},
    {"reverse", (PyCFunction)(void (*)(void))Munger_reverse, METH_FASTCALL | METH_KEYWORDS,
     "reverse(out_seq) -> the incoming extended seq in the current epoch, or None."},
    {"out_timestamp", (PyCFunction)(void (*)(void))Munger_out_timestamp, METH_FASTCALL | METH_KEYWORDS,
     "out_timestamp(timestamp) -> the outgoing timestamp."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Munger_getset[] = {
    {"last_seq", (getter)Munger_get_last_seq, NULL, "the last outgoing sequence number", NULL},
    {"last_ts", (getter)Munger_get_last_ts, NULL, "the last (highest) outgoing timestamp", NULL},
    {"started", (getter)Munger_get_started, NULL, "whether start() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject MungerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.RtpMunger",
    .tp_basicsize = sizeof(MungerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Compiled twin of sfu.media.munger.PyRtpMunger.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Munger_init,
    .tp_methods = Munger_methods,
    .tp_getset = Munger_getset,
};

/* ---------------------------------------------------------------- Vp8Munger */

typedef struct {
    int picture_id; /* -1 when absent */
    Py_ssize_t picture_id_pos;
    int picture_id_bits;
    int tl0picidx; /* -1 when absent */
    Py_ssize_t tl0picidx_pos;
} Vp8Descriptor;

/* sfu.media.vp8.parse_descriptor: 0 when malformed or short. */
static int parse_descriptor(const unsigned char *p, Py_ssize_t n, Vp8Descriptor *d)
{
    d->picture_id = -1;
    d->picture_id_pos = -1;
    d->picture_id_bits = 0;
    d->tl0picidx = -1;
    d->tl0picidx_pos = -1;
    if (n < 1)
        return 0;
    unsigned char b0 = p[0];
    Py_ssize_t pos = 1;
    if (b0 & 0x80) {
        if (n < 2)
            return 0;
        unsigned char x = p[1];
        pos = 2;
        if (x & 0x80) {
            if (n <= pos)
                return 0;
            d->picture_id_pos = pos;
            if (p[pos] & 0x80) {
                if (n <= pos + 1)
                    return 0;
                d->picture_id = ((p[pos] & 0x7F) << 8) | p[pos + 1];
                d->picture_id_bits = 15;
                pos += 2;
            } else {
                d->picture_id = p[pos] & 0x7F;
                d->picture_id_bits = 7;
                pos += 1;
            }
        }
        if (x & 0x40) {
            if (n <= pos)
                return 0;
            d->tl0picidx = p[pos];
            d->tl0picidx_pos = pos;
            pos += 1;
        }
        if (x & 0x30)
            pos += 1;
    }
    return pos <= n;
}

static void vp8_remember(Vp8Object *v, int pid, int tl0, int mask)
{
    /* Only move forward, judged in the picture ID's own width. */
    if (v->last_pid < 0 || ((pid - v->last_pid) & mask) <= (mask >> 1))
        v->last_pid = pid;
    if (tl0 >= 0 && (v->last_tl0 < 0 || ((tl0 - v->last_tl0) & 0xFF) < 0x80))
        v->last_tl0 = tl0;
}

int vp8_plan(Vp8Object *v, const unsigned char *p, Py_ssize_t n, Vp8Patch *patch)
{
    Vp8Descriptor d;
    patch->pid_pos = patch->tl0_pos = -1;
    if (!parse_descriptor(p, n, &d) || d.picture_id < 0)
        return 0;
    int mask = d.picture_id_bits == 15 ? 0x7FFF : 0x7F;
    if (v->pending || !v->started) {
        if (v->started && v->last_pid >= 0) {
            v->pid_offset = (v->last_pid + 1 - d.picture_id) & 0x7FFF;
            if (d.tl0picidx >= 0 && v->last_tl0 >= 0)
                v->tl0_offset = (v->last_tl0 + 1 - d.tl0picidx) & 0xFF;
        }
        v->started = 1;
        v->pending = 0;
    }
    if (v->pid_offset == 0 && v->tl0_offset == 0) {
        vp8_remember(v, d.picture_id, d.tl0picidx, mask);
        return 0;
    }
    int pid = (d.picture_id + v->pid_offset) & mask;
    patch->pid_pos = (int)d.picture_id_pos;
    patch->pid_bits = d.picture_id_bits;
    patch->pid = pid;
    int tl0 = -1;
    if (d.tl0picidx >= 0) {
        tl0 = (d.tl0picidx + v->tl0_offset) & 0xFF;
        patch->tl0_pos = (int)d.tl0picidx_pos;
        patch->tl0 = tl0;
    }
    vp8_remember(v, pid, tl0, mask);
    return 1;
}

void vp8_apply(unsigned char *out, const Vp8Patch *patch)
{
    if (patch->pid_pos >= 0) {
        if (patch->pid_bits == 15) {
            out[patch->pid_pos] = (unsigned char)(0x80 | (patch->pid >> 8));
            out[patch->pid_pos + 1] = (unsigned char)(patch->pid & 0xFF);
        } else {
            out[patch->pid_pos] = (unsigned char)patch->pid;
        }
    }
    if (patch->tl0_pos >= 0)
        out[patch->tl0_pos] = (unsigned char)patch->tl0;
}

PyObject *vp8_rewrite(Vp8Object *v, PyObject *payload)
{
    Py_buffer view;
    const unsigned char *p;
    Py_ssize_t n;
    int is_bytes = PyBytes_Check(payload);
    if (is_bytes) {
        p = (const unsigned char *)PyBytes_AS_STRING(payload);
        n = PyBytes_GET_SIZE(payload);
    } else {
        if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        p = (const unsigned char *)view.buf;
        n = view.len;
    }
    PyObject *result;
    Vp8Patch patch;
    if (!vp8_plan(v, p, n, &patch)) {
        result = Py_NewRef(payload);
    } else {
        result = PyBytes_FromStringAndSize((const char *)p, n);
        if (result != NULL)
            vp8_apply((unsigned char *)PyBytes_AS_STRING(result), &patch);
    }
    if (!is_bytes)
        PyBuffer_Release(&view);
    return result;
}

static int Vp8_init(Vp8Object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Vp8Munger", kwlist))
        return -1;
    self->pid_offset = 0;
    self->tl0_offset = 0;
    self->last_pid = -1;
    self->last_tl0 = -1;
    self->started = 0;
    self->pending = 0;
    return 0;
}

static PyObject *Vp8_restart(Vp8Object *self, PyObject *unused)
{
    self->pending = 1;
    Py_RETURN_NONE;
}

static PyObject *Vp8_rewrite(Vp8Object *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"payload"};
    PyObject *payload;
    if (fast_args("rewrite", fargs, nargs, kwnames, names, 1, 1, &payload) < 0)
        return NULL;
    return vp8_rewrite(self, payload);
}

static PyObject *Vp8_get_last_pid(Vp8Object *self, void *closure)
{
    return PyLong_FromLong(self->last_pid);
}

static PyObject *Vp8_get_last_tl0(Vp8Object *self, void *closure)
{
    return PyLong_FromLong(self->last_tl0);
}

static PyMethodDef Vp8_methods[] = {
    {"restart", (PyCFunction)Vp8_restart, METH_NOARGS,
     "The next packet (a keyframe of any layer) continues from the last values sent."},
    {"rewrite", (PyCFunction)(void (*)(void))Vp8_rewrite, METH_FASTCALL | METH_KEYWORDS,
     "rewrite(payload) -> the payload to send (the same object when unchanged)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Vp8_getset[] = {
    {"last_pid", (getter)Vp8_get_last_pid, NULL, "the last picture ID sent (-1 before any)", NULL},
    {"last_tl0", (getter)Vp8_get_last_tl0, NULL, "the last TL0PICIDX sent (-1 before any)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Vp8Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.Vp8Munger",
    .tp_basicsize = sizeof(Vp8Object),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Compiled twin of sfu.media.vp8.PyVp8Munger.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Vp8_init,
    .tp_methods = Vp8_methods,
    .tp_getset = Vp8_getset,
};

/* ---------------------------------------------------------------- PacketCache */

/* Slot of seq takes a new reference to obj (the packet, or its payload when shared); the
 * slot's index. */
static Py_ssize_t cache_store(CacheObject *c, long seq, PyObject *obj, int shared)
{
    Py_ssize_t i = slot_of(seq, c->size);
    PyObject *old = c->packets[i];
    Py_INCREF(obj);
    c->packets[i] = obj;
    c->seqs[i] = seq;
    c->resent_ms[i] = NEVER_RESENT;
    c->parts[i].shared = shared;
    Py_XDECREF(old);
    return i;
}

void cache_put(CacheObject *c, long seq, PyObject *packet)
{
    cache_store(c, seq, packet, 0);
}

void cache_put_parts(CacheObject *c, long seq, PyObject *payload, const unsigned char header[12], const Vp8Patch *patch)
{
    CacheParts *parts = &c->parts[cache_store(c, seq, payload, 1)];
    memcpy(parts->header, header, 12);
    parts->patch = *patch;
}

void write_parts(unsigned char *out, const unsigned char header[12], const unsigned char *payload, Py_ssize_t n,
                 const Vp8Patch *patch)
{
    memcpy(out, header, 12);
    memcpy(out + 12, payload, n);
    vp8_apply(out + 12, patch);
}

/* The packet of slot i (not empty): the object itself, or built from its parts. */
static PyObject *cache_packet(CacheObject *c, Py_ssize_t i)
{
    PyObject *stored = c->packets[i];
    const CacheParts *parts = &c->parts[i];
    if (!parts->shared)
        return Py_NewRef(stored);
    Py_ssize_t n = PyBytes_GET_SIZE(stored);
    PyObject *packet = PyBytes_FromStringAndSize(NULL, 12 + n);
    if (packet != NULL)
        write_parts((unsigned char *)PyBytes_AS_STRING(packet), parts->header,
                    (const unsigned char *)PyBytes_AS_STRING(stored), n, &parts->patch);
    return packet;
}

static void cache_free(CacheObject *c)
{
    if (c->packets != NULL) {
        for (Py_ssize_t i = 0; i < c->size; i++)
            Py_CLEAR(c->packets[i]);
    }
    PyMem_Free(c->packets);
    PyMem_Free(c->seqs);
    PyMem_Free(c->resent_ms);
    PyMem_Free(c->parts);
    c->parts = NULL;
    c->packets = NULL;
    c->seqs = NULL;
    c->resent_ms = NULL;
    c->size = 0;
}

static int Cache_init(CacheObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", NULL};
    Py_ssize_t size = 512;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:PacketCache", kwlist, &size))
        return -1;
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "PacketCache size must be at least 1");
        return -1;
    }
    cache_free(self);
    self->seqs = PyMem_Calloc((size_t)size, sizeof(long));
    self->packets = PyMem_Calloc((size_t)size, sizeof(PyObject *));
    self->resent_ms = PyMem_Calloc((size_t)size, sizeof(double));
    self->parts = PyMem_Calloc((size_t)size, sizeof(CacheParts));
    if (self->seqs == NULL || self->packets == NULL || self->resent_ms == NULL || self->parts == NULL) {
        cache_free(self);
        PyErr_NoMemory();
        return -1;
    }
    self->size = size;
    for (Py_ssize_t i = 0; i < size; i++) {
        self->seqs[i] = -1;
        self->resent_ms[i] = NEVER_RESENT;
    }
    return 0;
}

static int Cache_traverse(CacheObject *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->size; i++)
        Py_VISIT(self->packets[i]);
    return 0;
}

static int Cache_clear(CacheObject *self)
{
    for (Py_ssize_t i = 0; i < self->size; i++)
        Py_CLEAR(self->packets[i]);
    return 0;
}

static void Cache_dealloc(CacheObject *self)
{
    PyObject_GC_UnTrack(self);
    cache_free(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int cache_ready(CacheObject *c)
{
    if (c->size < 1) {
        PyErr_SetString(PyExc_RuntimeError, "PacketCache.__init__ was not called");
        return -1;
    }
    return 0;
}

static PyObject *Cache_put(CacheObject *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"seq", "packet"};
    PyObject *args[2];
    long seq;
    if (fast_args("put", fargs, nargs, kwnames, names, 2, 2, args) < 0 ||
        cache_ready(self) < 0 || long_arg(args[0], &seq) < 0)
        return NULL;
    cache_put(self, seq, args[1]);
    Py_RETURN_NONE;
}

static PyObject *Cache_get(CacheObject *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"seq"};
    PyObject *arg;
    if (fast_args("get", fargs, nargs, kwnames, names, 1, 1, &arg) < 0)
        return NULL;
    long seq;
    if (cache_ready(self) < 0 || long_arg(arg, &seq) < 0)
        return NULL;
    Py_ssize_t i = slot_of(seq, self->size);
    if (self->packets[i] != NULL && self->seqs[i] == seq)
        return cache_packet(self, i);
    Py_RETURN_NONE;
}

static PyObject *Cache_resent_ms(CacheObject *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"seq"};
    PyObject *arg;
    if (fast_args("resent_ms", fargs, nargs, kwnames, names, 1, 1, &arg) < 0)
        return NULL;
    long seq;
    if (cache_ready(self) < 0 || long_arg(arg, &seq) < 0)
        return NULL;
    return PyFloat_FromDouble(self->resent_ms[slot_of(seq, self->size)]);
}

static PyObject *Cache_mark_resent(CacheObject *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"seq", "now_ms"};
    PyObject *args[2];
    long seq;
    double now_ms;
    if (fast_args("mark_resent", fargs, nargs, kwnames, names, 2, 2, args) < 0 ||
        cache_ready(self) < 0 || long_arg(args[0], &seq) < 0 ||
        double_arg(args[1], &now_ms) < 0)
        return NULL;
    self->resent_ms[slot_of(seq, self->size)] = now_ms;
    Py_RETURN_NONE;
}

static PyMethodDef Cache_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Cache_put, METH_FASTCALL | METH_KEYWORDS, "put(seq, packet)"},
    {"get", (PyCFunction)(void (*)(void))Cache_get, METH_FASTCALL | METH_KEYWORDS,
     "get(seq) -> the cached packet, or None."},
    {"resent_ms", (PyCFunction)(void (*)(void))Cache_resent_ms, METH_FASTCALL | METH_KEYWORDS,
     "resent_ms(seq) -> when the cached packet was last resent (very negative if never)."},
    {"mark_resent", (PyCFunction)(void (*)(void))Cache_mark_resent, METH_FASTCALL | METH_KEYWORDS,
     "mark_resent(seq, now_ms)"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject CacheType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.PacketCache",
    .tp_basicsize = sizeof(CacheObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Compiled twin of sfu.media.packet_cache.PyPacketCache.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Cache_init,
    .tp_dealloc = (destructor)Cache_dealloc,
    .tp_traverse = (traverseproc)Cache_traverse,
    .tp_clear = (inquiry)Cache_clear,
    .tp_methods = Cache_methods,
};

/* ---------------------------------------------------------------- SendHistory */

void history_add(HistoryObject *h, long seq, double send_ms, long size)
{
    long long ext;
    if (h->highest < 0) {
        ext = h->highest = (long long)seq + 0x10000;
    } else {
        long long d = (long long)(((unsigned long long)seq - (unsigned long long)h->highest) & 0xFFFF);
        if (d >= 0x8000)
            d -= 0x10000;
        ext = h->highest + d;
        if (ext > h->highest)
            h->highest = ext;
    }
    Py_ssize_t i = slot_of(ext, h->size);
    h->ext[i] = ext;
    h->send_ms[i] = send_ms;
    h->sizes[i] = size;
}

static void history_free(HistoryObject *h)
{
    PyMem_Free(h->ext);
    PyMem_Free(h->send_ms);
    PyMem_Free(h->sizes);
    h->ext = NULL;
    h->send_ms = NULL;
    h->sizes = NULL;
    h->size = 0;
}

static int History_init(HistoryObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", NULL};
    Py_ssize_t size = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:SendHistory", kwlist, &size))
        return -1;
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "SendHistory size must be at least 1");
        return -1;
    }
    history_free(self);
    self->ext = PyMem_Calloc((size_t)size, sizeof(long long));
    self->send_ms = PyMem_Calloc((size_t)size, sizeof(double));
    self->sizes = PyMem_Calloc((size_t)size, sizeof(long));
    if (self->ext == NULL || self->send_ms == NULL || self->sizes == NULL) {
        history_free(self);
        PyErr_NoMemory();
        return -1;
    }
    self->size = size;
    self->highest = -1;
    for (Py_ssize_t i = 0; i < size; i++)
        self->ext[i] = HISTORY_EMPTY;
    return 0;
}

static void History_dealloc(HistoryObject *self)
{
    history_free(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int history_ready(HistoryObject *h)
{
    if (h->size < 1) {
        PyErr_SetString(PyExc_RuntimeError, "SendHistory.__init__ was not called");
        return -1;
    }
    return 0;
}

static PyObject *History_add(HistoryObject *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"seq", "send_ms", "size"};
    PyObject *args[3];
    long long seq;
    double send_ms;
    long size;
    if (fast_args("add", fargs, nargs, kwnames, names, 3, 3, args) < 0 ||
        history_ready(self) < 0 || ext_arg(args[0], &seq) < 0 ||
        double_arg(args[1], &send_ms) < 0 || long_arg(args[2], &size) < 0)
        return NULL;
    history_add(self, (long)seq, send_ms, size);
    Py_RETURN_NONE;
}

static PyObject *History_get(HistoryObject *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"seq"};
    PyObject *arg;
    if (fast_args("get", fargs, nargs, kwnames, names, 1, 1, &arg) < 0)
        return NULL;
    unsigned long long seq;
    if (history_ready(self) < 0 || low_bits(arg, &seq) < 0)
        return NULL;
    long long highest = self->highest;
    if (highest < 0)
        Py_RETURN_NONE;
    long long ext = highest - (long long)(((unsigned long long)highest - seq) & 0xFFFF);
    Py_ssize_t i = slot_of(ext, self->size);
    if (self->ext[i] != ext)
        Py_RETURN_NONE;
    return Py_BuildValue("(dl)", self->send_ms[i], self->sizes[i]);
}

static PyObject *History_get_highest(HistoryObject *self, void *closure)
{
    return PyLong_FromLongLong(self->highest);
}

static PyMethodDef History_methods[] = {
    {"add", (PyCFunction)(void (*)(void))History_add, METH_FASTCALL | METH_KEYWORDS, "add(seq, send_ms, size)"},
    {"get", (PyCFunction)(void (*)(void))History_get, METH_FASTCALL | METH_KEYWORDS,
     "get(seq) -> (send_ms, size), or None."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef History_getset[] = {
    {"highest", (getter)History_get_highest, NULL, "the highest extended seq added (-1 before the first)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject HistoryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.SendHistory",
    .tp_basicsize = sizeof(HistoryObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Compiled twin of sfu.bwe.estimator.PySendHistory.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)History_init,
    .tp_dealloc = (destructor)History_dealloc,
    .tp_methods = History_methods,
    .tp_getset = History_getset,
};

/* ---------------------------------------------------------------- module */

int media_add_types(PyObject *module)
{
    static struct {
        const char *name;
        PyTypeObject *type;
    } types[] = {
        {"RtpMunger", &MungerType},
        {"Vp8Munger", &Vp8Type},
        {"PacketCache", &CacheType},
        {"SendHistory", &HistoryType},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i].type) < 0)
            return -1;
        Py_INCREF(types[i].type);
        if (PyModule_AddObject(module, types[i].name, (PyObject *)types[i].type) < 0) {
            Py_DECREF(types[i].type);
            return -1;
        }
    }
    return 0;
}
