//! The decoder against split inputs and smuggling shapes; the re-framer's output for each
//! normalisation.

use super::*;

/// Decodes and re-frames `input` fed in pieces of `step` bytes, as the relay does with a
/// read buffer that keeps unconsumed bytes: returns (framed, data, consumed, done).
fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>, usize, bool), ChunkError> {
    let mut d = ChunkedDecoder::new();
    let mut out = Reframed::default();
    let mut end = 0;
    while !d.is_done() && end < input.len() {
        end = (end + step).min(input.len());
        while !d.is_done() {
            let at = &input[out.used..end];
            let p = d.decode(at)?;
            out.used += p.consumed;
            let Some(piece) = p.piece else { break };
            out.push(&piece, at);
        }
    }
    let Reframed { framed, data, used } = out;
    Ok((framed, data, used, d.is_done()))
}

fn framed(input: &[u8]) -> Result<String, ChunkError> {
    let (framed, _, _, done) = run(input, input.len())?;
    assert!(done, "incomplete: {:?}", String::from_utf8_lossy(input));
    Ok(String::from_utf8(framed).unwrap())
}

#[test]
fn decodes_in_any_split() {
    let body = b"5\r\nhello\r\n1;ext=1\r\n \r\n0\r\nX-T: 1\r\n\r\nNEXT";
    for step in 1..body.len() {
        let (framed, data, consumed, done) = run(body, step).unwrap();
        assert_eq!(data, b"hello ");
        assert!(done);
        assert_eq!(consumed, body.len() - 4, "step {step}");
        assert_eq!(
            framed, b"5\r\nhello\r\n1\r\n \r\n0\r\nX-T: 1\r\n\r\n",
            "step {step}"
        );
    }
}

#[test]
fn normalises_sizes_extensions_and_trailers() {
    // Upper-case and leading-zero sizes become plain lower-case hex.
    assert_eq!(
        framed(b"000A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
        "a\r\n0123456789\r\n0\r\n\r\n"
    );
    // Extensions (with BWS before `;`) are dropped.
    assert_eq!(
        framed(b"2 ; a=b\r\nhi\r\n0;x\r\n\r\n").unwrap(),
        "2\r\nhi\r\n0\r\n\r\n"
    );
    assert_eq!(
        framed(b"2;a=\"q s\"\r\nhi\r\n0\r\n\r\n").unwrap(),
        "2\r\nhi\r\n0\r\n\r\n"
    );
    // Trailer values are trimmed; framing, routing and auth fields are dropped.
    assert_eq!(
        framed(b"0\r\nX-Sum:   abc  \r\nContent-Length: 5\r\nHost: evil\r\nAuthorization: x\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4\r\nProxy-Foo: 1\r\nx-b:\r\n\r\n").unwrap(),
        "0\r\nX-Sum: abc\r\nx-b: \r\n\r\n"
    );
    // Chunk boundaries are kept.
    assert_eq!(
        framed(b"1\r\na\r\n2\r\nbc\r\n0\r\n\r\n").unwrap(),
        "1\r\na\r\n2\r\nbc\r\n0\r\n\r\n"
    );
}

#[test]
fn rejects_smuggling_shapes() {
    for bad in [
        &b"\r\n"[..],
        b"g\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloX\r\n",
        b"-5\r\n",
        b"0x5\r\nhello\r\n",
        b"+5\r\nhello\r\n",
        b"1000000000000000\r\n",
        b"5\r\x00\nhello",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\t\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
        b"5;a\x01\r\nhello\r\n0\r\n\r\n",
        b"0\r\nX: a\rb\r\n\r\n",
        b"0\r\n\r\r",
        // A last chunk without its final CRLF, then the next request: not a trailer.
        b"0\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        b"0\r\n : x\r\n\r\n",
        b"0\r\nX : x\r\n\r\n",
        b"0\r\nX: a\r\n folded\r\n\r\n",
        b"0\r\nX\r\n\r\n",
    ] {
        let r = run(bad, 64);
        assert!(
            r.is_err() || !r.as_ref().unwrap().3,
            "{:?}: {r:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(
            reframe(bad).map_or(true, |r| r.is_none()),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn counts_data_and_limits_lines() {
    let mut d = ChunkedDecoder::new();
    let input = b"a\r\n0123456789\r\n0\r\n\r\n";
    assert_eq!(d.decode(input).unwrap().piece, Some(Piece::Size(10)));
    let p = d.decode(&input[3..]).unwrap();
    assert_eq!(
        p.piece,
        Some(Piece::Data {
            range: 0..10,
            ends_chunk: true
        })
    );
    assert_eq!(d.data_total(), 10);
    let mut d = ChunkedDecoder::new();
    let long = [b"1;".as_slice(), &[b'x'; 5000]].concat();
    assert_eq!(d.decode(&long), Err(ChunkError::LineTooLong));
    let many: Vec<u8> = [b"0\r\n".as_slice()]
        .into_iter()
        .chain(std::iter::repeat_n(b"x: 1\r\n".as_slice(), 65))
        .chain([b"\r\n".as_slice()])
        .flatten()
        .copied()
        .collect();
    assert_eq!(reframe(&many), Err(ChunkError::LineTooLong));
}

#[test]
fn round_trip_is_stable() {
    let input = b"3;x=y\r\nabc\r\n00010\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
    let once = reframe(input).unwrap().unwrap();
    assert_eq!(once.used, input.len());
    let twice = reframe(&once.framed).unwrap().unwrap();
    assert_eq!(twice.framed, once.framed);
    assert_eq!(twice.data, once.data);
    assert_eq!(twice.used, once.framed.len());
}
