# cython: language_level=3
"""llhttp driven from compiled code, for the compiled data plane (setup.py).

The same parser httptools wraps, at the same version (vendor/llhttp, from the
httptools 0.9.0 source), behind the part of httptools' interface the data plane
uses: `feed_data`, `get_method`, `get_http_version`, `get_status_code`,
`should_keep_alive`, `set_dangerous_leniencies` and httptools' own exceptions,
raised in the same cases with the same messages.  It also hands a field over
the way httptools does (name and value, once the next field starts or the head
ends).  So reading.py
and response.py do not know which one runs, and the pure build keeps httptools
(http11.strict_request_parser chooses).

What differs is the calls into the data plane: httptools enters Python for each
callback, about fifteen times a request; here a callback calls the reader's
method through its C method table (reading.pxd, response.pxd).  A protocol
that is not a reader (http11.verify_strict's sink) gets no callbacks, only the
parse errors.  aiohttp drives llhttp from its own Cython the same way.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t, uint16_t

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserInvalidStatusError,
    HttpParserInvalidURLError,
    HttpParserUpgrade,
)

from proxy.dataplane.reading cimport RequestReader
from proxy.dataplane.response cimport ResponseReader


cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        void* data
        uint8_t method
        uint8_t http_major
        uint8_t http_minor
        uint8_t upgrade
        uint16_t status_code

    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char* at, size_t length) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_data_cb on_status
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete
        llhttp_cb on_chunk_header
        llhttp_cb on_chunk_complete

    ctypedef enum llhttp_type_t:
        HTTP_REQUEST
        HTTP_RESPONSE

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_INVALID_METHOD
        HPE_INVALID_URL
        HPE_INVALID_STATUS
        HPE_CB_MESSAGE_BEGIN
        HPE_CB_HEADERS_COMPLETE
        HPE_CB_MESSAGE_COMPLETE
        HPE_CB_CHUNK_HEADER
        HPE_CB_CHUNK_COMPLETE
        HPE_USER
        HPE_PAUSED_UPGRADE

    void llhttp_settings_init(llhttp_settings_t* settings)
    void llhttp_init(llhttp_t* parser, llhttp_type_t kind, const llhttp_settings_t* settings)
    llhttp_errno_t llhttp_execute(llhttp_t* parser, const char* data, size_t size)
    int llhttp_should_keep_alive(const llhttp_t* parser)
    void llhttp_resume_after_upgrade(llhttp_t* parser)
    const char* llhttp_get_error_reason(const llhttp_t* parser)
    void llhttp_set_error_reason(llhttp_t* parser, const char* reason)
    const char* llhttp_get_error_pos(const llhttp_t* parser)
    const char* llhttp_method_name(uint8_t method)
    void llhttp_set_lenient_headers(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_chunked_length(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_keep_alive(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_transfer_encoding(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_version(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_data_after_close(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_optional_lf_after_cr(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_optional_cr_before_lf(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_optional_crlf_after_chunk(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_spaces_after_chunk_size(llhttp_t* parser, int enabled)


cdef int _set_leniency(llhttp_t* parser, str name, int enabled) except -1:
    if name == "lenient_headers":
        llhttp_set_lenient_headers(parser, enabled)
    elif name == "lenient_chunked_length":
        llhttp_set_lenient_chunked_length(parser, enabled)
    elif name == "lenient_keep_alive":
        llhttp_set_lenient_keep_alive(parser, enabled)
    elif name == "lenient_transfer_encoding":
        llhttp_set_lenient_transfer_encoding(parser, enabled)
    elif name == "lenient_version":
        llhttp_set_lenient_version(parser, enabled)
    elif name == "lenient_data_after_close":
        llhttp_set_lenient_data_after_close(parser, enabled)
    elif name == "lenient_optional_lf_after_cr":
        llhttp_set_lenient_optional_lf_after_cr(parser, enabled)
    elif name == "lenient_optional_cr_before_lf":
        llhttp_set_lenient_optional_cr_before_lf(parser, enabled)
    elif name == "lenient_optional_crlf_after_chunk":
        llhttp_set_lenient_optional_crlf_after_chunk(parser, enabled)
    elif name == "lenient_spaces_after_chunk_size":
        llhttp_set_lenient_spaces_after_chunk_size(parser, enabled)
    else:
        raise TypeError(f"unknown leniency {name!r}")
    return 0


cdef class _Parser:
    """What requests and responses share: llhttp's state, feeding it, a field
    being gathered, and the error a callback raised.  The events are virtual
    methods, each subclass passing its own on to its reader."""

    cdef llhttp_t parser
    cdef bytes name, value  # the field being gathered (None: none yet)
    cdef object error  # what a callback raised, for the HttpParserCallbackError

    cdef int _begin(self) except -1:
        return 0

    cdef int _url(self, bytes url) except -1:
        return 0

    cdef int _status(self, bytes reason) except -1:
        return 0

    cdef int _field(self, bytes name, bytes value) except -1:
        return 0

    cdef int _head_done(self) except -1:
        return 0

    cdef int _body(self, bytes body) except -1:
        return 0

    cdef int _complete(self) except -1:
        return 0

    cdef int _flush_field(self) except -1:
        """Hand over the field gathered so far (httptools' _maybe_call_on_header)."""
        cdef bytes name, value
        if self.value is not None:
            name, value = self.name, self.value
            self.name = self.value = None
            self._field(name, value)
        return 0

    def set_dangerous_leniencies(self, **leniencies) -> None:
        for name, enabled in leniencies.items():
            if enabled is not None:
                _set_leniency(&self.parser, name, enabled)

    def get_http_version(self) -> str:
        cdef uint8_t major = self.parser.http_major, minor = self.parser.http_minor
        if major == 1:
            return "1.1" if minor == 1 else "1.0" if minor == 0 else f"1.{minor}"
        return f"{major}.{minor}"

    def should_keep_alive(self) -> bool:
        return bool(llhttp_should_keep_alive(&self.parser))

    def feed_data(self, data) -> None:
        cdef Py_buffer view
        cdef llhttp_errno_t err
        cdef const char* start
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            start = <const char*>view.buf
            err = llhttp_execute(&self.parser, start, <size_t>view.len)
            if self.parser.upgrade == 1 and err == HPE_PAUSED_UPGRADE:
                # As httptools does: resume at once, and say where the rest begins.
                offset = llhttp_get_error_pos(&self.parser) - start
                llhttp_resume_after_upgrade(&self.parser)
                raise HttpParserUpgrade(offset)
        finally:
            PyBuffer_Release(&view)
        if err != HPE_OK:
            raise self._error(err)

    cdef _error(self, llhttp_errno_t err):
        reason = (<bytes>llhttp_get_error_reason(&self.parser)).decode("latin-1")
        if err in (HPE_CB_MESSAGE_BEGIN, HPE_CB_HEADERS_COMPLETE, HPE_CB_MESSAGE_COMPLETE,
                   HPE_CB_CHUNK_HEADER, HPE_CB_CHUNK_COMPLETE, HPE_USER):
            exc = HttpParserCallbackError(reason)
            if self.error is not None:
                exc.__context__ = self.error  # what the callback raised (reading.py reads it)
                self.error = None
            return exc
        if err == HPE_INVALID_STATUS:
            return HttpParserInvalidStatusError(reason)
        if err == HPE_INVALID_METHOD:
            return HttpParserInvalidMethodError(reason)
        if err == HPE_INVALID_URL:
            return HttpParserInvalidURLError(reason)
        return HttpParserError(reason)


cdef class HttpRequestParser(_Parser):
    cdef RequestReader reader

    def __cinit__(self, protocol):
        # Any other protocol (http11.verify_strict's sink) gets no callbacks.
        self.reader = protocol if isinstance(protocol, RequestReader) else None
        llhttp_init(&self.parser, HTTP_REQUEST, &_REQUEST if self.reader else &_NONE)
        self.parser.data = <void*>self

    def get_method(self) -> bytes:
        return llhttp_method_name(self.parser.method)

    cdef int _begin(self) except -1:
        self.reader.on_message_begin()
        return 0

    cdef int _url(self, bytes url) except -1:
        self.reader.on_url(url)
        return 0

    cdef int _field(self, bytes name, bytes value) except -1:
        self.reader.on_header(name, value)
        return 0

    cdef int _head_done(self) except -1:
        self.reader.on_headers_complete()
        return 0

    cdef int _body(self, bytes body) except -1:
        self.reader.on_body(body)
        return 0

    cdef int _complete(self) except -1:
        self.reader.on_message_complete()
        return 0


cdef class HttpResponseParser(_Parser):
    cdef ResponseReader reader

    def __cinit__(self, protocol):
        self.reader = protocol if isinstance(protocol, ResponseReader) else None
        llhttp_init(&self.parser, HTTP_RESPONSE, &_RESPONSE if self.reader else &_NONE)
        self.parser.data = <void*>self

    def get_status_code(self) -> int:
        return self.parser.status_code

    cdef int _status(self, bytes reason) except -1:
        self.reader.on_status(reason)
        return 0

    cdef int _field(self, bytes name, bytes value) except -1:
        self.reader.on_header(name, value)
        return 0

    cdef int _head_done(self) except -1:
        self.reader.on_headers_complete()
        return 0

    cdef int _body(self, bytes body) except -1:
        self.reader.on_body(body)
        return 0

    cdef int _complete(self) except -1:
        self.reader.on_message_complete()
        return 0


# -- llhttp's callbacks: each keeps what a callback raised for feed_data, as httptools
# does (a data callback with the reason httptools gives, the others as llhttp's own).

cdef int _failed(llhttp_t* parser, object exc, const char* reason) noexcept:
    (<_Parser>parser.data).error = exc
    if reason != NULL:
        llhttp_set_error_reason(parser, reason)
        return HPE_USER
    return -1


cdef int _on_message_begin(llhttp_t* parser) noexcept:
    try:
        (<_Parser>parser.data)._begin()
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 0


cdef int _on_url(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        (<_Parser>parser.data)._url(at[:size])
    except BaseException as exc:
        return _failed(parser, exc, "`on_url` callback error")
    return 0


cdef int _on_status(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        (<_Parser>parser.data)._status(at[:size])
    except BaseException as exc:
        return _failed(parser, exc, "`on_status` callback error")
    return 0


cdef int _on_header_field(llhttp_t* parser, const char* at, size_t size) noexcept:
    cdef _Parser self = <_Parser>parser.data
    try:
        self._flush_field()
        if self.name is None:
            self.name = at[:size]
        else:  # the name came in pieces: a read ended inside it
            self.name += at[:size]
    except BaseException as exc:
        return _failed(parser, exc, "`on_header_field` callback error")
    return 0


cdef int _on_header_value(llhttp_t* parser, const char* at, size_t size) noexcept:
    cdef _Parser self = <_Parser>parser.data
    try:
        if self.value is None:
            self.value = at[:size]
        else:
            self.value += at[:size]
    except BaseException as exc:
        return _failed(parser, exc, "`on_header_value` callback error")
    return 0


cdef int _on_headers_complete(llhttp_t* parser) noexcept:
    cdef _Parser self = <_Parser>parser.data
    try:
        self._flush_field()
        self._head_done()
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    # An upgrade: llhttp is to read no body, and pauses after the message.
    return 1 if parser.upgrade else 0


cdef int _on_body(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        (<_Parser>parser.data)._body(at[:size])
    except BaseException as exc:
        return _failed(parser, exc, "`on_body` callback error")
    return 0


cdef int _on_message_complete(llhttp_t* parser) noexcept:
    try:
        (<_Parser>parser.data)._complete()
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 0


cdef int _on_chunk_header(llhttp_t* parser) noexcept:
    cdef _Parser self = <_Parser>parser.data
    if self.name is not None or self.value is not None:
        return _failed(parser, HttpParserError("invalid headers state"), NULL)
    return 0


cdef int _on_chunk_complete(llhttp_t* parser) noexcept:
    try:
        (<_Parser>parser.data)._flush_field()  # a trailer field, as httptools hands it over
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 0


cdef void _common(llhttp_settings_t* settings) noexcept:
    llhttp_settings_init(settings)
    settings.on_header_field = _on_header_field
    settings.on_header_value = _on_header_value
    settings.on_headers_complete = _on_headers_complete
    settings.on_body = _on_body
    settings.on_message_complete = _on_message_complete
    settings.on_chunk_header = _on_chunk_header
    settings.on_chunk_complete = _on_chunk_complete


# What httptools sets for each reader: on_message_begin only for requests, since
# only the request reader has it.  _NONE: no callbacks, for a protocol that is not a reader.
cdef llhttp_settings_t _REQUEST, _RESPONSE, _NONE
_common(&_REQUEST)
_REQUEST.on_message_begin = _on_message_begin
_REQUEST.on_url = _on_url
_common(&_RESPONSE)
_RESPONSE.on_status = _on_status
llhttp_settings_init(&_NONE)
