//! The chunked decoder on arbitrary bytes: never a panic; fed in two pieces it finds the
//! same as fed whole; and a round trip holds: decode -> re-frame -> decode gives the same
//! data, and re-framing normalised framing changes nothing.
#![no_main]

use gateway::dataplane::h1::chunked::{ChunkedDecoder, Piece, reframe};
use libfuzzer_sys::fuzz_target;

/// Decodes `data` split at `split`, as a relay would (unconsumed bytes are kept).
fn split_decode(data: &[u8], split: usize) -> Result<Option<Vec<u8>>, ()> {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut pos = 0;
    for end in [split, data.len()] {
        while !d.is_done() {
            let at = &data[pos..end.max(pos)];
            let p = d.decode(at).map_err(|_| ())?;
            pos += p.consumed;
            match p.piece {
                None => break,
                Some(Piece::Data { range, .. }) => out.extend_from_slice(&at[range]),
                Some(_) => {}
            }
        }
    }
    Ok(d.is_done().then_some(out))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let whole = reframe(data);
    let split = usize::from(split).min(data.len());
    match &whole {
        Ok(Some(r)) => assert_eq!(split_decode(data, split), Ok(Some(r.data.clone()))),
        Ok(None) => assert_eq!(split_decode(data, split), Ok(None)),
        Err(_) => assert_eq!(split_decode(data, split), Err(())),
    }
    if let Ok(Some(r)) = whole {
        let again = reframe(&r.framed).expect("re-framed bytes decode").expect("complete");
        assert_eq!(again.data, r.data);
        assert_eq!(again.framed, r.framed);
        assert_eq!(again.used, r.framed.len());
    }
});
