/* The compiled SRTP path: protect and sendto in one call, no Python object per packet; and
 * unprotect of what a transport receives without pylibsrtp's buffer copies.
 *
 * sfu.rtc.fastpath wraps this module (and falls back to the pure-Python path without it).
 * One OutboundSrtp is the outgoing SRTP session of one DTLS transport, created from the same
 * keying material aiortc derives for its own (pylibsrtp) session; its output is byte for
 * byte what pylibsrtp's protect() gives for the same key and packets
 * (tests/unit/test_fastpath.py).
 *
 *   OutboundSrtp(profile, key)       profile: libsrtp's srtp_profile_t (pylibsrtp's
 *                                    Policy.SRTP_PROFILE_* have the same values); key: master
 *                                    key + salt
 *   .protect(packet) -> bytes        SRTP of one plain RTP packet
 *   .send(fd, packet, sockaddr[, ext_id, transport_seq]) -> int
 *                                    protect and sendto(fd, sockaddr); with ext_id (1..14),
 *                                    first insert the transport-wide sequence number in a new
 *                                    one-byte header extension (the packet has a plain 12-byte
 *                                    header), as sfu.media.rtp.with_transport_seq does. Returns
 *                                    the plain length sent, or -1 (nothing sent).
 *   InboundSrtp(profile, key)        the incoming session of a transport, with
 *   .unprotect(packet), .unprotect_rtcp(packet) -> bytes   (SrtpError when refused: failed
 *                                    authentication, replay), as pylibsrtp's do
 *   sockaddr(host, port) -> bytes    a packed sockaddr_in / sockaddr_in6 for send()
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <srtp2/srtp.h>
#include <structmember.h>
#include <time.h>

#include "_media.h"

#define MAX_PACKET 1500
#define TRAILER_ROOM (SRTP_MAX_TRAILER_LEN + 16)

/* protect / unprotect of one RTP or RTCP packet in place (libsrtp 2's signature). */
typedef srtp_err_status_t (*srtp_fn)(srtp_t, void *, int *);

typedef struct {
    PyObject_HEAD
    srtp_t session;
    srtp_fn rtp;     /* srtp_protect (outbound) or srtp_unprotect (inbound) */
    srtp_fn rtcp;    /* srtp_unprotect_rtcp (inbound) */
    PyObject *owner; /* a borrowed session's owner (kept alive, deallocates it); NULL: ours */
} OutboundSrtp;

/* InboundSrtp has the same layout: one session, for what a transport receives. */
typedef OutboundSrtp InboundSrtp;

static PyObject *SrtpError; /* sfu.rtc._fastpath.SrtpError: a packet refused by unprotect */

static int srtp_ready = 0;

static int ensure_srtp_init(void)
{
    if (!srtp_ready) {
        if (srtp_init() != srtp_err_status_ok) {
            PyErr_SetString(PyExc_RuntimeError, "srtp_init failed");
            return -1;
        }
        srtp_ready = 1;
    }
    return 0;
}

static int session_init(OutboundSrtp *self, PyObject *args, srtp_ssrc_type_t direction)
{
    int profile;
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "iy*", &profile, &key))
        return -1;
    if (ensure_srtp_init() < 0) {
        PyBuffer_Release(&key);
        return -1;
    }
    srtp_policy_t policy;
    memset(&policy, 0, sizeof(policy));
    if (srtp_crypto_policy_set_from_profile_for_rtp(&policy.rtp, (srtp_profile_t)profile) != srtp_err_status_ok ||
        srtp_crypto_policy_set_from_profile_for_rtcp(&policy.rtcp, (srtp_profile_t)profile) != srtp_err_status_ok) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "unsupported SRTP profile %d", profile);
        return -1;
    }
    size_t need = srtp_profile_get_master_key_length((srtp_profile_t)profile) +
                  srtp_profile_get_master_salt_length((srtp_profile_t)profile);
    if ((size_t)key.len != need) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "SRTP key and salt must be %zu bytes", need);
        return -1;
    }
    unsigned char keybuf[64];
    memcpy(keybuf, key.buf, key.len);
    PyBuffer_Release(&key);
    policy.ssrc.type = direction;
    policy.key = keybuf;
    policy.window_size = 1024;
    policy.allow_repeat_tx = 1;
    policy.next = NULL;
    if (self->session != NULL && self->owner == NULL)
        srtp_dealloc(self->session);
    self->session = NULL;
    Py_CLEAR(self->owner);
    if (direction == ssrc_any_outbound) {
        self->rtp = srtp_protect;
        self->rtcp = NULL;
    } else {
        self->rtp = srtp_unprotect;
        self->rtcp = srtp_unprotect_rtcp;
    }
    srtp_err_status_t err = srtp_create(&self->session, &policy);
    memset(keybuf, 0, sizeof(keybuf));
    if (err != srtp_err_status_ok) {
        self->session = NULL;
        PyErr_Format(PyExc_RuntimeError, "srtp_create failed (%d)", (int)err);
        return -1;
    }
    return 0;
}

static int OutboundSrtp_init(OutboundSrtp *self, PyObject *args, PyObject *kwds)
{
    return session_init(self, args, ssrc_any_outbound);
}

static int InboundSrtp_init(InboundSrtp *self, PyObject *args, PyObject *kwds)
{
    return session_init(self, args, ssrc_any_inbound);
}

static void OutboundSrtp_dealloc(OutboundSrtp *self)
{
    if (self->owner != NULL)
        Py_CLEAR(self->owner); /* the owner deallocates a borrowed session */
    else if (self->session != NULL)
        srtp_dealloc(self->session);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Copy the packet into buf (with the transport-wide sequence number inserted when ext_id > 0)
 * and protect it there; returns the protected length, or -1 with no exception set. */
static int build_and_protect(OutboundSrtp *self, const unsigned char *data, Py_ssize_t len, int ext_id, int tw_seq,
                             unsigned char *buf, Py_ssize_t *plain_len)
{
    Py_ssize_t n;
    if (len < 12 || self->session == NULL)
        return -1;
    if (ext_id > 0) {
        if (len + 8 > MAX_PACKET || (data[0] & 0x1F) != 0)
            return -1; /* only plain 12-byte headers get the extension */
        buf[0] = data[0] | 0x10;
        memcpy(buf + 1, data + 1, 11);
        buf[12] = 0xBE;
        buf[13] = 0xDE;
        buf[14] = 0;
        buf[15] = 1;
        buf[16] = (unsigned char)((ext_id << 4) | 1);
        buf[17] = (unsigned char)((tw_seq >> 8) & 0xFF);
        buf[18] = (unsigned char)(tw_seq & 0xFF);
        buf[19] = 0;
        memcpy(buf + 20, data + 12, len - 12);
        n = len + 8;
    } else {
        if (len > MAX_PACKET)
            return -1;
        memcpy(buf, data, len);
        n = len;
    }
    *plain_len = n;
    int out_len = (int)n;
    if (self->rtp(self->session, buf, &out_len) != srtp_err_status_ok)
        return -1;
    return out_len;
}

static PyObject *OutboundSrtp_protect(OutboundSrtp *self, PyObject *arg)
{
    Py_buffer packet;
    if (PyObject_GetBuffer(arg, &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char buf[MAX_PACKET + 8 + TRAILER_ROOM];
    Py_ssize_t plain;
    int n = build_and_protect(self, packet.buf, packet.len, 0, 0, buf, &plain);
    PyBuffer_Release(&packet);
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "SRTP protect failed");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf, n);
}

static PyObject *OutboundSrtp_send(OutboundSrtp *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "send(fd, packet, sockaddr[, ext_id, transport_seq])");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    int ext_id = 0, tw_seq = 0;
    if (nargs == 5) {
        ext_id = (int)PyLong_AsLong(args[3]);
        tw_seq = (int)PyLong_AsLong(args[4]);
        if (PyErr_Occurred())
            return NULL;
        if (ext_id < 1 || ext_id > 14) {
            PyErr_SetString(PyExc_ValueError, "ext_id must be 1..14");
            return NULL;
        }
    }
    if (!PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "packet and sockaddr must be bytes");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[1]);
    const char *addr = PyBytes_AS_STRING(args[2]);
    Py_ssize_t addr_len = PyBytes_GET_SIZE(args[2]);
    unsigned char buf[MAX_PACKET + 8 + TRAILER_ROOM];
    Py_ssize_t plain;
    int n = build_and_protect(self, data, len, ext_id, tw_seq, buf, &plain);
    if (n < 0)
        return PyLong_FromLong(-1);
    ssize_t sent;
    do {
        sent = sendto(fd, buf, (size_t)n, 0, (const struct sockaddr *)addr, (socklen_t)addr_len);
    } while (sent < 0 && errno == EINTR);
    return PyLong_FromSsize_t(sent < 0 ? -1 : plain);
}

static PyMethodDef OutboundSrtp_methods[] = {
    {"protect", (PyCFunction)OutboundSrtp_protect, METH_O, "SRTP of one plain RTP packet."},
    {"send", (PyCFunction)(void (*)(void))OutboundSrtp_send, METH_FASTCALL,
     "send(fd, packet, sockaddr[, ext_id, transport_seq]) -> plain length sent, or -1."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OutboundSrtpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.OutboundSrtp",
    .tp_basicsize = sizeof(OutboundSrtp),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The outgoing SRTP session of one transport (libsrtp2).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)OutboundSrtp_init,
    .tp_dealloc = (destructor)OutboundSrtp_dealloc,
    .tp_methods = OutboundSrtp_methods,
};

/* Unprotect one SRTP (rtcp = 0) or SRTCP packet; SrtpError if it is refused. */
static PyObject *unprotect(InboundSrtp *self, PyObject *arg, int rtcp)
{
    Py_buffer packet;
    if (PyObject_GetBuffer(arg, &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char buf[MAX_PACKET + TRAILER_ROOM];
    if (packet.len < (rtcp ? 8 : 12) || packet.len > (Py_ssize_t)sizeof(buf)) {
        PyBuffer_Release(&packet);
        PyErr_SetString(SrtpError, "packet too short or too long");
        return NULL;
    }
    memcpy(buf, packet.buf, packet.len);
    int len = (int)packet.len;
    PyBuffer_Release(&packet);
    if (self->session == NULL || (rtcp ? self->rtcp : self->rtp) == NULL) {
        PyErr_SetString(SrtpError, "no SRTP session");
        return NULL;
    }
    srtp_err_status_t err = rtcp ? self->rtcp(self->session, buf, &len) : self->rtp(self->session, buf, &len);
    if (err != srtp_err_status_ok) {
        PyErr_Format(SrtpError, "SRTP unprotect failed (%d)", (int)err);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf, len);
}

static PyObject *InboundSrtp_unprotect(InboundSrtp *self, PyObject *arg)
{
    return unprotect(self, arg, 0);
}

static PyObject *InboundSrtp_unprotect_rtcp(InboundSrtp *self, PyObject *arg)
{
    return unprotect(self, arg, 1);
}

static PyMethodDef InboundSrtp_methods[] = {
    {"unprotect", (PyCFunction)InboundSrtp_unprotect, METH_O, "The plain RTP packet, or SrtpError."},
    {"unprotect_rtcp", (PyCFunction)InboundSrtp_unprotect_rtcp, METH_O, "The plain RTCP packet, or SrtpError."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject InboundSrtpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.InboundSrtp",
    .tp_basicsize = sizeof(InboundSrtp),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The incoming SRTP session of one transport (libsrtp2).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)InboundSrtp_init,
    .tp_dealloc = (destructor)OutboundSrtp_dealloc,
    .tp_methods = InboundSrtp_methods,
};

static PyObject *make_sockaddr(PyObject *module, PyObject *args)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port))
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
    memset(&v4, 0, sizeof(v4));
    memset(&v6, 0, sizeof(v6));
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v4, sizeof(v4));
    }
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v6, sizeof(v6));
    }
    PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
    return NULL;
}


/* ---- Sink: a subscriber's RTP sink (sfu/rtc/sink.py's PySink is the reference) ---------- */

typedef struct {
    PyObject_HEAD
    PyObject *history;  /* SendHistory (compiled or not): add(seq, send_ms, size) */
    PyObject *clock;    /* NULL: CLOCK_MONOTONIC in ms; else a callable returning ms */
    PyObject *fallback; /* callable(stamped packet) -> length sent or -1; NULL: none */
    int ext_id;
    int tw_seq;
    long long bytes_sent;
    /* The direct path, while attached: */
    OutboundSrtp *srtp;
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    PyObject *nominated, *key, *pair, *transport, *state_attr, *connected;
} SinkObject;

static PyTypeObject SinkType;

static void sink_detach(SinkObject *self)
{
    Py_CLEAR(self->srtp);
    Py_CLEAR(self->nominated);
    Py_CLEAR(self->key);
    Py_CLEAR(self->pair);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->state_attr);
    Py_CLEAR(self->connected);
    self->fd = -1;
}

static int Sink_init(SinkObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"history", "clock", NULL};
    PyObject *history, *clock = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O", kwlist, &history, &clock))
        return -1;
    Py_INCREF(history);
    Py_XSETREF(self->history, history);
    if (clock == Py_None) {
        Py_CLEAR(self->clock);
    } else {
        Py_INCREF(clock);
        Py_XSETREF(self->clock, clock);
    }
    self->ext_id = 0;
    self->tw_seq = 0;
    self->bytes_sent = 0;
    sink_detach(self);
    return 0;
}

static int Sink_traverse(SinkObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->history);
    Py_VISIT(self->clock);
    Py_VISIT(self->fallback);
    Py_VISIT(self->srtp);
    Py_VISIT(self->nominated);
    Py_VISIT(self->key);
    Py_VISIT(self->pair);
    Py_VISIT(self->transport);
    Py_VISIT(self->state_attr);
    Py_VISIT(self->connected);
    return 0;
}

static int Sink_clear(SinkObject *self)
{
    Py_CLEAR(self->history);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->fallback);
    sink_detach(self);
    return 0;
}

static void Sink_dealloc(SinkObject *self)
{
    PyObject_GC_UnTrack(self);
    Sink_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The send time for the history, in ms; -1 with an exception set on error. */
static double sink_now_ms(SinkObject *self)
{
    if (self->clock == NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    }
    PyObject *r = PyObject_CallNoArgs(self->clock);
    if (r == NULL)
        return -1;
    double ms = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return ms;
}

/* Whether the attached pair is still the nominated one and the transport connected. */
static int sink_still_valid(SinkObject *self)
{
    PyObject *pair = PyDict_GetItemWithError(self->nominated, self->key); /* borrowed */
    if (pair != self->pair) {
        PyErr_Clear();
        return 0;
    }
    PyObject *state = PyObject_GetAttr(self->transport, self->state_attr);
    if (state == NULL) {
        PyErr_Clear();
        return 0;
    }
    int ok = state == self->connected;
    Py_DECREF(state);
    return ok;
}

/* A copy of a packet with a plain 12-byte header, stamped as sfu.media.rtp.with_transport_seq does. */
static PyObject *stamp_packet(const unsigned char *data, Py_ssize_t len, int ext_id, int tw)
{
    if (len < 12) {
        PyErr_SetString(PyExc_ValueError, "RTP packet shorter than its header");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, len + 8);
    if (out == NULL)
        return NULL;
    unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(out);
    buf[0] = data[0] | 0x10;
    memcpy(buf + 1, data + 1, 11);
    buf[12] = 0xBE;
    buf[13] = 0xDE;
    buf[14] = 0;
    buf[15] = 1;
    buf[16] = (unsigned char)((ext_id << 4) | 1);
    buf[17] = (unsigned char)((tw >> 8) & 0xFF);
    buf[18] = (unsigned char)(tw & 0xFF);
    buf[19] = 0;
    memcpy(buf + 20, data + 12, len - 12);
    return out;
}

/* Send one RTP packet (data, len; packet: the same as bytes, or NULL to make it only if the
 * fallback needs it); the length sent, -1 if not sent, -2 with an exception set. */
static long sink_send_raw(SinkObject *self, const unsigned char *data, Py_ssize_t len, PyObject *packet)
{
    int ext_id = self->ext_id, tw = 0;
    long size = -1;
    if (ext_id) {
        tw = self->tw_seq;
        self->tw_seq = (tw + 1) & 0xFFFF;
    }
    if (self->srtp != NULL && !sink_still_valid(self))
        sink_detach(self);
    if (self->srtp != NULL) {
        unsigned char buf[MAX_PACKET + 8 + TRAILER_ROOM];
        Py_ssize_t plain;
        int n = build_and_protect(self->srtp, data, len, ext_id, tw, buf, &plain);
        if (n >= 0) {
            ssize_t sent;
            do {
                sent = sendto(self->fd, buf, (size_t)n, 0, (const struct sockaddr *)&self->addr, self->addr_len);
            } while (sent < 0 && errno == EINTR);
            if (sent >= 0)
                size = (long)plain;
        }
    } else if (self->fallback != NULL && self->fallback != Py_None) {
        PyObject *stamped;
        if (ext_id)
            stamped = stamp_packet(data, len, ext_id, tw);
        else if (packet != NULL)
            stamped = Py_NewRef(packet);
        else
            stamped = PyBytes_FromStringAndSize((const char *)data, len);
        if (stamped == NULL)
            return -2;
        PyObject *r = PyObject_CallOneArg(self->fallback, stamped);
        Py_DECREF(stamped);
        if (r == NULL)
            return -2;
        size = PyLong_AsLong(r);
        Py_DECREF(r);
        if (size == -1 && PyErr_Occurred())
            return -2;
    }
    if (size < 0)
        return -1;
    if (ext_id) {
        double now = sink_now_ms(self);
        if (now == -1 && PyErr_Occurred())
            return -2;
        if (Py_TYPE(self->history) == &HistoryType) {
            history_add((HistoryObject *)self->history, tw, now, size);
        } else {
            PyObject *r = PyObject_CallMethod(self->history, "add", "idl", tw, now, size);
            if (r == NULL)
                return -2;
            Py_DECREF(r);
        }
    }
    self->bytes_sent += size;
    return size;
}

/* Send one RTP packet (bytes); as sink_send_raw. */
static long sink_send(SinkObject *self, PyObject *packet)
{
    return sink_send_raw(self, (const unsigned char *)PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), packet);
}

static PyObject *Sink_send(SinkObject *self, PyObject *packet)
{
    if (!PyBytes_Check(packet)) {
        PyErr_SetString(PyExc_TypeError, "packet must be bytes");
        return NULL;
    }
    long size = sink_send(self, packet);
    if (size == -2)
        return NULL;
    return PyLong_FromLong(size);
}

static PyObject *Sink_call(SinkObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *packet;
    if (!PyArg_ParseTuple(args, "S", &packet))
        return NULL;
    long size = sink_send(self, packet);
    if (size == -2)
        return NULL;
    return PyBool_FromLong(size >= 0);
}

/* attach(srtp, fd, sockaddr, nominated, key, pair, transport, state_attr, connected) */
static PyObject *Sink_attach(SinkObject *self, PyObject *args)
{
    PyObject *srtp, *addr, *nominated, *key, *pair, *transport, *state_attr, *connected;
    int fd;
    if (!PyArg_ParseTuple(args, "O!iSO!OOOUO", &OutboundSrtpType, &srtp, &fd, &addr, &PyDict_Type, &nominated,
                          &key, &pair, &transport, &state_attr, &connected))
        return NULL;
    Py_ssize_t addr_len = PyBytes_GET_SIZE(addr);
    if (fd < 0 || addr_len <= 0 || addr_len > (Py_ssize_t)sizeof(self->addr)) {
        PyErr_SetString(PyExc_ValueError, "a socket and a packed address are needed");
        return NULL;
    }
    sink_detach(self);
    memcpy(&self->addr, PyBytes_AS_STRING(addr), addr_len);
    self->addr_len = (socklen_t)addr_len;
    self->fd = fd;
    Py_INCREF(srtp);
    self->srtp = (OutboundSrtp *)srtp;
    Py_INCREF(nominated);
    self->nominated = nominated;
    Py_INCREF(key);
    self->key = key;
    Py_INCREF(pair);
    self->pair = pair;
    Py_INCREF(transport);
    self->transport = transport;
    Py_INCREF(state_attr);
    self->state_attr = state_attr;
    Py_INCREF(connected);
    self->connected = connected;
    Py_RETURN_NONE;
}

static PyObject *Sink_detach(SinkObject *self, PyObject *unused)
{
    sink_detach(self);
    Py_RETURN_NONE;
}

static PyObject *Sink_get_attached(SinkObject *self, void *closure)
{
    return PyBool_FromLong(self->srtp != NULL);
}

static PyObject *Sink_get_fallback(SinkObject *self, void *closure)
{
    if (self->fallback == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->fallback);
    return self->fallback;
}

static int Sink_set_fallback(SinkObject *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        Py_CLEAR(self->fallback);
        return 0;
    }
    Py_INCREF(value);
    Py_XSETREF(self->fallback, value);
    return 0;
}

static PyMethodDef Sink_methods[] = {
    {"send", (PyCFunction)Sink_send, METH_O, "send(packet) -> length sent, or -1."},
    {"attach", (PyCFunction)Sink_attach, METH_VARARGS,
     "attach(srtp, fd, sockaddr, nominated, key, pair, transport, state_attr, connected): send directly while "
     "nominated[key] is pair and getattr(transport, state_attr) is connected."},
    {"detach", (PyCFunction)Sink_detach, METH_NOARGS, "Forget the direct path (use fallback)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Sink_members[] = {
    {"ext_id", T_INT, offsetof(SinkObject, ext_id), 0, "transport-cc header extension id (0: none)"},
    {"tw_seq", T_INT, offsetof(SinkObject, tw_seq), 0, "the next transport-wide sequence number"},
    {"bytes_sent", T_LONGLONG, offsetof(SinkObject, bytes_sent), 0, "bytes sent (RTP, stamped)"},
    {"history", T_OBJECT, offsetof(SinkObject, history), READONLY, "the send history"},
    {NULL},
};

static PyGetSetDef Sink_getset[] = {
    {"attached", (getter)Sink_get_attached, NULL, "whether the direct path is in use", NULL},
    {"fallback", (getter)Sink_get_fallback, (setter)Sink_set_fallback, "the way out without the direct path", NULL},
    {NULL},
};

static PyTypeObject SinkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.Sink",
    .tp_basicsize = sizeof(SinkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A subscriber's RTP sink (sfu.rtc.sink.PySink is the reference).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sink_init,
    .tp_dealloc = (destructor)Sink_dealloc,
    .tp_traverse = (traverseproc)Sink_traverse,
    .tp_clear = (inquiry)Sink_clear,
    .tp_call = (ternaryfunc)Sink_call,
    .tp_methods = Sink_methods,
    .tp_members = Sink_members,
    .tp_getset = Sink_getset,
};

/* ---- OutStream (sfu.forwarding.PyOutStream is the reference) ----------------------------- */

typedef struct {
    PyObject_HEAD
    unsigned int ssrc;
    int rtx_seq;
    PyObject *munger; /* RtpMunger (compiled) */
    PyObject *vp8;    /* Vp8Munger (compiled) */
    long long packets_sent, octets_sent, last_send_ms;
} OutStreamObject;

static int OutStream_init(OutStreamObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ssrc", "initial_seq", "initial_ts", NULL};
    PyObject *ssrc, *seq, *ts;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO", kwlist, &ssrc, &seq, &ts))
        return -1;
    unsigned long v = PyLong_AsUnsignedLong(ssrc);
    if (PyErr_Occurred() || v > 0xFFFFFFFFUL) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "ssrc must be a 32-bit unsigned integer");
        return -1;
    }
    long s = PyLong_AsLong(seq);
    if (s == -1 && PyErr_Occurred())
        return -1;
    PyObject *munger = PyObject_CallFunctionObjArgs((PyObject *)&MungerType, seq, ts, NULL);
    if (munger == NULL)
        return -1;
    PyObject *vp8 = PyObject_CallNoArgs((PyObject *)&Vp8Type);
    if (vp8 == NULL) {
        Py_DECREF(munger);
        return -1;
    }
    self->ssrc = (unsigned int)v;
    self->rtx_seq = (int)((s ^ 0x5A5A) & 0x7FFFFFFF);
    Py_XSETREF(self->munger, munger);
    Py_XSETREF(self->vp8, vp8);
    self->packets_sent = self->octets_sent = self->last_send_ms = 0;
    return 0;
}

static void OutStream_dealloc(OutStreamObject *self)
{
    Py_CLEAR(self->munger);
    Py_CLEAR(self->vp8);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *OutStream_next_rtx_seq(OutStreamObject *self, PyObject *unused)
{
    int seq = self->rtx_seq;
    self->rtx_seq = (seq + 1) & 0xFFFF;
    return PyLong_FromLong(seq);
}

static PyMethodDef OutStream_methods[] = {
    {"next_rtx_seq", (PyCFunction)OutStream_next_rtx_seq, METH_NOARGS, "The RTX stream's next sequence number."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef OutStream_members[] = {
    {"ssrc", T_UINT, offsetof(OutStreamObject, ssrc), 0, NULL},
    {"rtx_seq", T_INT, offsetof(OutStreamObject, rtx_seq), 0, NULL},
    {"munger", T_OBJECT, offsetof(OutStreamObject, munger), READONLY, NULL},
    {"vp8", T_OBJECT, offsetof(OutStreamObject, vp8), READONLY, NULL},
    {"packets_sent", T_LONGLONG, offsetof(OutStreamObject, packets_sent), 0, NULL},
    {"octets_sent", T_LONGLONG, offsetof(OutStreamObject, octets_sent), 0, NULL},
    {"last_send_ms", T_LONGLONG, offsetof(OutStreamObject, last_send_ms), 0, NULL},
    {NULL},
};

static PyTypeObject OutStreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.OutStream",
    .tp_basicsize = sizeof(OutStreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The outgoing RTP stream of one subscriber m-section (sfu.forwarding.PyOutStream).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)OutStream_init,
    .tp_dealloc = (destructor)OutStream_dealloc,
    .tp_methods = OutStream_methods,
    .tp_members = OutStream_members,
};

/* ---- Gate and fanout (sfu.forwarding.PyGate and py_fanout are the reference) ------------- */

typedef struct {
    PyObject_HEAD
    int current, target, must_restart, paused, bandwidth_paused, python_only, payload_type, rewrite_vp8;
    int direct; /* out, cache, munger and VP8 munger are the compiled types: forward here */
    long long packets_dropped;
    PyObject *out, *cache, *send;
} GateObject;

static int Gate_init(GateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"out", "cache", "send", "payload_type", "rewrite_vp8", "python_only", NULL};
    PyObject *out, *cache, *send;
    int payload_type, rewrite_vp8, python_only;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOipp", kwlist, &out, &cache, &send, &payload_type, &rewrite_vp8,
                                     &python_only))
        return -1;
    Py_INCREF(out);
    Py_XSETREF(self->out, out);
    Py_INCREF(cache);
    Py_XSETREF(self->cache, cache);
    Py_INCREF(send);
    Py_XSETREF(self->send, send);
    self->payload_type = payload_type & 0x7F;
    self->rewrite_vp8 = rewrite_vp8;
    self->python_only = python_only;
    self->direct = Py_TYPE(out) == &OutStreamType && Py_TYPE(cache) == &CacheType &&
                   Py_TYPE(((OutStreamObject *)out)->munger) == &MungerType &&
                   Py_TYPE(((OutStreamObject *)out)->vp8) == &Vp8Type;
    self->current = -1;
    self->target = 0;
    self->must_restart = 1;
    self->paused = self->bandwidth_paused = 0;
    self->packets_dropped = 0;
    return 0;
}

static int Gate_traverse(GateObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->out);
    Py_VISIT(self->cache);
    Py_VISIT(self->send);
    return 0;
}

static int Gate_clear(GateObject *self)
{
    Py_CLEAR(self->out);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->send);
    self->direct = 0;
    return 0;
}

static void Gate_dealloc(GateObject *self)
{
    PyObject_GC_UnTrack(self);
    Gate_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Gate_members[] = {
    {"current", T_INT, offsetof(GateObject, current), 0, "the layer being forwarded (-1: none)"},
    {"target", T_INT, offsetof(GateObject, target), 0, "the layer wanted"},
    {"must_restart", T_INT, offsetof(GateObject, must_restart), 0, "restart on the next keyframe"},
    {"paused", T_INT, offsetof(GateObject, paused), 0, "paused by the subscriber"},
    {"bandwidth_paused", T_INT, offsetof(GateObject, bandwidth_paused), 0, "paused for bandwidth"},
    {"python_only", T_INT, offsetof(GateObject, python_only), READONLY, "Consumer.forward is always called"},
    {"payload_type", T_INT, offsetof(GateObject, payload_type), READONLY, NULL},
    {"rewrite_vp8", T_INT, offsetof(GateObject, rewrite_vp8), READONLY, NULL},
    {"direct", T_INT, offsetof(GateObject, direct), READONLY, "steady packets are forwarded without Python"},
    {"packets_dropped", T_LONGLONG, offsetof(GateObject, packets_dropped), 0, NULL},
    {"out", T_OBJECT, offsetof(GateObject, out), READONLY, NULL},
    {"cache", T_OBJECT, offsetof(GateObject, cache), READONLY, NULL},
    {"send", T_OBJECT, offsetof(GateObject, send), READONLY, NULL},
    {NULL},
};

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.Gate",
    .tp_basicsize = sizeof(GateObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A consumer's per-packet state (sfu.forwarding.PyGate is the reference).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gate_init,
    .tp_dealloc = (destructor)Gate_dealloc,
    .tp_traverse = (traverseproc)Gate_traverse,
    .tp_clear = (inquiry)Gate_clear,
    .tp_members = Gate_members,
};

/* What Consumer.forward does for a consumer steady on the packet's layer; 0, or -1 on error.
 *
 * The packet is built on the stack and the cache keeps it as parts (the shared payload, this
 * consumer's header and VP8 rewrite): nothing is allocated per consumer unless the send goes
 * through Python (no direct path, or a send function that is not a Sink). */
static int forward_steady(GateObject *gate, long long ext_seq, uint32_t timestamp, int marker, PyObject *payload,
                          long long arrival_ms)
{
    OutStreamObject *out = (OutStreamObject *)gate->out;
    uint16_t seq;
    uint32_t ts;
    if (!munger_map((MungerObject *)out->munger, ext_seq, timestamp, &seq, &ts)) {
        gate->packets_dropped++;
        return 0;
    }
    const unsigned char *body = (const unsigned char *)PyBytes_AS_STRING(payload);
    Py_ssize_t n = PyBytes_GET_SIZE(payload);
    Vp8Patch patch = {.pid_pos = -1, .tl0_pos = -1};
    if (gate->rewrite_vp8)
        vp8_plan((Vp8Object *)out->vp8, body, n, &patch);
    unsigned char header[12];
    header[0] = 0x80;
    header[1] = (unsigned char)(((marker & 1) << 7) | gate->payload_type);
    header[2] = (unsigned char)(seq >> 8);
    header[3] = (unsigned char)seq;
    header[4] = (unsigned char)(ts >> 24);
    header[5] = (unsigned char)(ts >> 16);
    header[6] = (unsigned char)(ts >> 8);
    header[7] = (unsigned char)ts;
    header[8] = (unsigned char)(out->ssrc >> 24);
    header[9] = (unsigned char)(out->ssrc >> 16);
    header[10] = (unsigned char)(out->ssrc >> 8);
    header[11] = (unsigned char)out->ssrc;
    cache_put_parts((CacheObject *)gate->cache, seq, payload, header, &patch);
    PyObject *packet = NULL; /* the packet as bytes, when it cannot be sent from the stack */
    unsigned char stack[MAX_PACKET];
    unsigned char *b = stack;
    int on_stack = 12 + n <= MAX_PACKET && Py_TYPE(gate->send) == &SinkType;
    if (!on_stack) {
        packet = PyBytes_FromStringAndSize(NULL, 12 + n);
        if (packet == NULL)
            return -1;
        b = (unsigned char *)PyBytes_AS_STRING(packet);
    }
    write_parts(b, header, body, n, &patch);
    int ok;
    if (Py_TYPE(gate->send) == &SinkType) {
        long size = sink_send_raw((SinkObject *)gate->send, b, 12 + n, packet);
        if (size == -2) {
            Py_XDECREF(packet);
            return -1;
        }
        ok = size >= 0;
    } else {
        PyObject *r = PyObject_CallOneArg(gate->send, packet);
        if (r == NULL) {
            Py_DECREF(packet);
            return -1;
        }
        ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (ok < 0) {
            Py_DECREF(packet);
            return -1;
        }
    }
    Py_XDECREF(packet);
    if (ok) {
        out->packets_sent++;
        out->octets_sent += n;
        out->last_send_ms = arrival_ms;
    } else if (out->packets_sent == 0) {
        gate->must_restart = 1; /* not connected yet: start again on a later keyframe */
    }
    return 0;
}

static PyObject *forward_name; /* "forward" */

/* fanout(consumers, gates, layer, ext_seq, timestamp, marker, payload, keyframe, arrival_ms) */
static PyObject *fanout(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyList_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "fanout(consumers: list, gates: list, layer, ext_seq, timestamp, marker, payload, keyframe, "
                        "arrival_ms)");
        return NULL;
    }
    PyObject *consumers = args[0], *gates = args[1], *payload = args[6];
    int layer = (int)PyLong_AsLong(args[2]);
    long long ext_seq = PyLong_AsLongLong(args[3]);
    uint32_t timestamp = (uint32_t)PyLong_AsUnsignedLongMask(args[4]);
    int marker = (int)PyLong_AsLong(args[5]);
    long long arrival_ms = PyLong_AsLongLong(args[8]);
    if (PyErr_Occurred())
        return NULL;
    int plain_bytes = PyBytes_CheckExact(payload);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(gates) && i < PyList_GET_SIZE(consumers); i++) {
        PyObject *g = PyList_GET_ITEM(gates, i);
        int python = 1;
        if (Py_TYPE(g) == &GateType) {
            GateObject *gate = (GateObject *)g;
            if (!gate->python_only) {
                if (gate->paused || gate->bandwidth_paused)
                    continue;
                if (gate->current == layer && !gate->must_restart) {
                    if (gate->direct && plain_bytes) {
                        Py_INCREF(g);
                        int r = forward_steady(gate, ext_seq, timestamp, marker, payload, arrival_ms);
                        Py_DECREF(g);
                        if (r < 0)
                            return NULL;
                        python = 0;
                    }
                } else if (gate->target != layer) {
                    continue; /* another layer, or a late packet of the layer it left */
                }
            }
        }
        if (python) {
            PyObject *consumer = PyList_GET_ITEM(consumers, i);
            Py_INCREF(consumer);
            PyObject *call_args[8] = {consumer, args[2], args[3], args[4], args[5], args[6], args[7], args[8]};
            PyObject *r = PyObject_VectorcallMethod(forward_name, call_args, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_DECREF(consumer);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
}

/* borrow_srtp(inbound, session, rtp_fn, rtcp_fn, owner): an OutboundSrtp (inbound false) or
 * InboundSrtp using another library's libsrtp 2 session and functions, given as addresses
 * (pylibsrtp's, through aiortc_glue): what that library's own protect / unprotect do, with its
 * crypto backend. owner keeps the session alive. */
static PyObject *borrow_srtp(PyObject *module, PyObject *args)
{
    int inbound;
    unsigned long long session, rtp, rtcp;
    PyObject *owner;
    if (!PyArg_ParseTuple(args, "pKKKO", &inbound, &session, &rtp, &rtcp, &owner))
        return NULL;
    if (session == 0 || rtp == 0 || (inbound && rtcp == 0)) {
        PyErr_SetString(PyExc_ValueError, "a session and its functions are needed");
        return NULL;
    }
    PyTypeObject *type = inbound ? &InboundSrtpType : &OutboundSrtpType;
    OutboundSrtp *self = (OutboundSrtp *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->session = (srtp_t)(uintptr_t)session;
    self->rtp = (srtp_fn)(uintptr_t)rtp;
    self->rtcp = inbound ? (srtp_fn)(uintptr_t)rtcp : NULL;
    Py_INCREF(owner);
    self->owner = owner;
    return (PyObject *)self;
}

static PyMethodDef module_methods[] = {
    {"sockaddr", make_sockaddr, METH_VARARGS, "sockaddr(host, port) -> packed sockaddr for OutboundSrtp.send"},
    {"borrow_srtp", borrow_srtp, METH_VARARGS,
     "borrow_srtp(inbound, session, rtp_fn, rtcp_fn, owner) -> OutboundSrtp or InboundSrtp on another library's "
     "libsrtp session."},
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "fanout(consumers, gates, layer, ext_seq, timestamp, marker, payload, keyframe, arrival_ms): one packet of "
     "one layer to every consumer of a producer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "sfu.rtc._fastpath", "SRTP protect + sendto in one call (libsrtp2).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&OutboundSrtpType) < 0 || PyType_Ready(&InboundSrtpType) < 0 || PyType_Ready(&SinkType) < 0 ||
        PyType_Ready(&OutStreamType) < 0 || PyType_Ready(&GateType) < 0)
        return NULL;
    forward_name = PyUnicode_InternFromString("forward");
    if (forward_name == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&OutboundSrtpType);
    if (PyModule_AddObject(m, "OutboundSrtp", (PyObject *)&OutboundSrtpType) < 0) {
        Py_DECREF(&OutboundSrtpType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&InboundSrtpType);
    if (PyModule_AddObject(m, "InboundSrtp", (PyObject *)&InboundSrtpType) < 0) {
        Py_DECREF(&InboundSrtpType);
        Py_DECREF(m);
        return NULL;
    }
    SrtpError = PyErr_NewException("sfu.rtc._fastpath.SrtpError", PyExc_ValueError, NULL);
    if (SrtpError == NULL || PyModule_AddObject(m, "SrtpError", SrtpError) < 0) {
        Py_XDECREF(SrtpError);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(SrtpError);
    PyModule_AddIntConstant(m, "MAX_PACKET", MAX_PACKET);
    if (media_add_types(m) < 0 || PyModule_AddObjectRef(m, "Sink", (PyObject *)&SinkType) < 0 ||
        PyModule_AddObjectRef(m, "OutStream", (PyObject *)&OutStreamType) < 0 ||
        PyModule_AddObjectRef(m, "Gate", (PyObject *)&GateType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
