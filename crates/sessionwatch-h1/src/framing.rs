//! How a body is delimited on the wire (RFC 9112 section 6.3): one type and one set of rules for
//! both directions, read from a head that arrived or chosen for a head about to be written.

use http::{Method, StatusCode};

use crate::error::{Error, Kind};
use crate::fields::FramingFields;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body. Read: the message has none (an answer to HEAD, a 1xx, 204 or 304, a length of 0,
    /// a request with neither a length nor a coding). Written: no body goes out, and the head's
    /// framing fields stand as they are (an answer to HEAD, or a 304, keeps the length of the
    /// body it stands for).
    Empty,
    /// This many bytes, announced by `Content-Length`. Written for a length of 0 too, so that
    /// the receiver knows there is no body rather than reading until the close.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (answers only): the connection is not reused.
    UntilClose,
}

/// Whether an answer has no body whatever its fields say (RFC 9112 6.3, rule 1): it answers a
/// HEAD request, or it is a 1xx, 204 or 304.
pub(crate) fn bodiless(status: StatusCode, head_request: bool) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

impl Framing {
    /// An arriving request's framing: a transfer coding wins over a length and must end in
    /// `chunked` (rule 4: anything else cannot be delimited and is refused); then a length,
    /// whose values must all agree; with neither, no body (rule 6: a request is never delimited
    /// by the close).
    pub(crate) fn of_request(fields: &FramingFields) -> Result<Self, Error> {
        if fields.transfer_coding {
            return if fields.chunked {
                Ok(Framing::Chunked)
            } else {
                Err(Error::new(Kind::BadTransferCoding))
            };
        }
        Ok(match fields.length.map_err(Error::new)? {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }

    /// An arriving answer's framing, and whether it leaves the connection fit for another
    /// request once its body has been read. Rules 1 to 7 in order: no body for HEAD, 1xx, 204
    /// and 304 whatever the fields say; a transfer coding wins over a length, and only `chunked`
    /// last delimits the body (any other coding runs until the close); a length next to a
    /// transfer coding is wrong by definition, so the connection is not reused after it;
    /// lengths must all agree; with neither, the body runs until the close.
    pub(crate) fn of_answer(
        status: StatusCode,
        head_request: bool,
        fields: &FramingFields,
    ) -> Result<(Self, bool), Error> {
        if bodiless(status, head_request) {
            return Ok((Framing::Empty, true));
        }
        if fields.transfer_coding {
            return Ok(if fields.chunked {
                (Framing::Chunked, fields.length_values == 0)
            } else {
                (Framing::UntilClose, false)
            });
        }
        Ok(match fields.length.map_err(Error::new)? {
            Some(0) => (Framing::Empty, true),
            Some(n) => (Framing::Length(n), true),
            None => (Framing::UntilClose, false),
        })
    }

    /// The framing of an answer about to go to a client, its body `len` bytes long when that is
    /// known: none for the answers that never have a body, the length when known, otherwise
    /// chunked, or until the close for an HTTP/1.0 client (which knows no chunked coding).
    pub fn for_answer(
        status: StatusCode,
        head_request: bool,
        http10: bool,
        len: Option<u64>,
    ) -> Self {
        match len {
            _ if bodiless(status, head_request) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None if http10 => Framing::UntilClose,
            None => Framing::Chunked,
        }
    }

    /// The framing of a request about to go to a backend with its body of `len` bytes in hand:
    /// a length whenever there is a body, the request said it had one (`announced`), or its
    /// method expects one (a POST with no length is refused by some servers); otherwise none.
    pub(crate) fn for_request(method: &Method, len: usize, announced: bool) -> Self {
        if announced || len > 0 || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            Framing::Length(len as u64)
        } else {
            Framing::Empty
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(f: impl FnOnce(&mut FramingFields)) -> FramingFields {
        let mut fields = FramingFields::NONE;
        f(&mut fields);
        fields
    }

    fn length(n: u64) -> FramingFields {
        fields(|f| {
            f.length = Ok(Some(n));
            f.length_values = 1;
        })
    }

    fn chunked() -> FramingFields {
        fields(|f| {
            f.transfer_coding = true;
            f.chunked = true;
        })
    }

    #[test]
    fn requests_are_framed_by_a_coding_then_a_length_and_never_by_the_close() {
        // Rule 6: neither field, no body.
        assert_eq!(Framing::of_request(&fields(|_| {})), Ok(Framing::Empty));
        assert_eq!(Framing::of_request(&length(0)), Ok(Framing::Empty));
        assert_eq!(Framing::of_request(&length(12)), Ok(Framing::Length(12)));
        // Rule 3: the coding wins over a length.
        let both = fields(|f| {
            *f = chunked();
            f.length = Ok(Some(5));
            f.length_values = 1;
        });
        assert_eq!(Framing::of_request(&both), Ok(Framing::Chunked));
        // Rule 4: a coding that does not end in chunked cannot be delimited.
        let gzip = fields(|f| f.transfer_coding = true);
        assert!(Framing::of_request(&gzip).unwrap_err().is_framing());
        // Rule 5: lengths that do not read or agree.
        let bad = fields(|f| f.length = Err(Kind::ConflictingLength));
        assert!(Framing::of_request(&bad).unwrap_err().is_framing());
    }

    #[test]
    fn answers_follow_rules_one_to_seven() {
        let ok = StatusCode::OK;
        for status in [100, 101, 103, 204, 304] {
            let status = StatusCode::from_u16(status).unwrap();
            for f in [
                length(9),
                chunked(),
                fields(|f| f.length = Err(Kind::BadLength)),
            ] {
                assert_eq!(
                    Framing::of_answer(status, false, &f),
                    Ok((Framing::Empty, true))
                );
            }
        }
        assert_eq!(
            Framing::of_answer(ok, true, &length(1000)),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            Framing::of_answer(ok, false, &chunked()),
            Ok((Framing::Chunked, true))
        );
        let both = fields(|f| {
            *f = chunked();
            f.length = Ok(Some(3));
            f.length_values = 1;
        });
        assert_eq!(
            Framing::of_answer(ok, false, &both),
            Ok((Framing::Chunked, false))
        );
        let gzip = fields(|f| f.transfer_coding = true);
        assert_eq!(
            Framing::of_answer(ok, false, &gzip),
            Ok((Framing::UntilClose, false))
        );
        assert_eq!(
            Framing::of_answer(ok, false, &length(0)),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            Framing::of_answer(ok, false, &length(5)),
            Ok((Framing::Length(5), true))
        );
        let bad = fields(|f| f.length = Err(Kind::ConflictingLength));
        assert!(
            Framing::of_answer(ok, false, &bad)
                .unwrap_err()
                .is_framing()
        );
        assert_eq!(
            Framing::of_answer(ok, false, &fields(|_| {})),
            Ok((Framing::UntilClose, false))
        );
    }

    #[test]
    fn answers_are_written_with_the_framing_their_client_can_read() {
        let ok = StatusCode::OK;
        assert_eq!(
            Framing::for_answer(ok, false, false, Some(0)),
            Framing::Length(0)
        );
        assert_eq!(
            Framing::for_answer(ok, false, false, Some(7)),
            Framing::Length(7)
        );
        assert_eq!(
            Framing::for_answer(ok, false, false, None),
            Framing::Chunked
        );
        assert_eq!(
            Framing::for_answer(ok, false, true, None),
            Framing::UntilClose
        );
        assert_eq!(
            Framing::for_answer(ok, true, false, Some(7)),
            Framing::Empty
        );
        for status in [
            StatusCode::CONTINUE,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
        ] {
            assert_eq!(
                Framing::for_answer(status, false, true, None),
                Framing::Empty
            );
        }
    }

    #[test]
    fn requests_are_written_with_a_length_when_they_may_have_a_body() {
        assert_eq!(Framing::for_request(&Method::GET, 0, false), Framing::Empty);
        assert_eq!(
            Framing::for_request(&Method::GET, 0, true),
            Framing::Length(0)
        );
        assert_eq!(
            Framing::for_request(&Method::GET, 3, false),
            Framing::Length(3)
        );
        for m in [Method::POST, Method::PUT, Method::PATCH] {
            assert_eq!(Framing::for_request(&m, 0, false), Framing::Length(0));
        }
        assert_eq!(
            Framing::for_request(&Method::DELETE, 0, false),
            Framing::Empty
        );
    }
}
