//! What the codec refuses: a head or a body that is not valid HTTP/1.1, or is over a limit.

use std::fmt;

/// Bytes that are not a valid HTTP/1.1 message, or that go past a limit. Opaque: the message
/// says what was wrong, the predicates say what a caller may want to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    MalformedHead,
    TooManyHeaders,
    HeadTooLarge,
    BadStatus,
    BadHeader,
    BadLength,
    ConflictingLength,
    BadTransferCoding,
    BadChunkSize,
    ChunkDataEnd,
    ChunkLineTooLong,
    BareLf,
    TrailersTooLong,
}

impl Error {
    pub(crate) const fn new(kind: Kind) -> Self {
        Self(kind)
    }

    /// The head has more fields than [`MAX_HEADERS`](crate::MAX_HEADERS).
    pub fn is_too_many_headers(&self) -> bool {
        self.0 == Kind::TooManyHeaders
    }

    /// The head is longer than [`MAX_HEAD`](crate::MAX_HEAD).
    pub fn is_head_too_large(&self) -> bool {
        self.0 == Kind::HeadTooLarge
    }

    /// The head says two things about its body's length, or nothing that can be read.
    pub fn is_framing(&self) -> bool {
        matches!(
            self.0,
            Kind::BadLength | Kind::ConflictingLength | Kind::BadTransferCoding
        )
    }

    /// A chunked body broke its coding.
    pub fn is_chunked(&self) -> bool {
        matches!(
            self.0,
            Kind::BadChunkSize
                | Kind::ChunkDataEnd
                | Kind::ChunkLineTooLong
                | Kind::BareLf
                | Kind::TrailersTooLong
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::MalformedHead => "malformed head",
            Kind::TooManyHeaders => "too many headers",
            Kind::HeadTooLarge => "head too large",
            Kind::BadStatus => "bad status code",
            Kind::BadHeader => "bad header",
            Kind::BadLength => "bad content-length",
            Kind::ConflictingLength => "conflicting content-length",
            Kind::BadTransferCoding => "a transfer coding that is not chunked last",
            Kind::BadChunkSize => "bad chunk size",
            Kind::ChunkDataEnd => "chunk data not followed by CRLF",
            Kind::ChunkLineTooLong => "line too long in a chunked body",
            Kind::BareLf => "bare LF in a chunked body",
            Kind::TrailersTooLong => "trailers too long",
        })
    }
}

impl std::error::Error for Error {}
