//! Just enough of the VP8 and Opus bitstreams to mux them: where a decoder can start, the
//! picture size, and how long an audio packet plays.

/// A VP8 picture size, as its keyframe header states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSize {
    pub width: u16,
    pub height: u16,
}

/// The picture size if `frame` is a VP8 keyframe (RFC 6386 §9.1: a 3-byte frame tag whose low
/// bit is 0, the start code 9d 01 2a, then 14-bit width and height), else `None`. The
/// bitstream decides, not the stored keyframe flag, because the bitstream is what a decoder
/// sees.
pub(crate) fn vp8_keyframe(frame: &[u8]) -> Option<FrameSize> {
    let head = frame.get(..10)?;
    if head[0] & 1 != 0 || head[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    // The top two bits of each are the upscaling mode, not part of the size.
    let width = u16::from_le_bytes([head[6], head[7]]) & 0x3fff;
    let height = u16::from_le_bytes([head[8], head[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some(FrameSize { width, height })
}

/// How long an Opus packet plays, from its TOC byte (RFC 6716 §3.1). A packet too short to say
/// plays for 0: a decoder rejects it.
pub(crate) fn opus_duration_us(packet: &[u8]) -> u64 {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = usize::from(toc >> 3);
    let frame_us = match config {
        0..=11 => [10_000, 20_000, 40_000, 60_000][config % 4],
        12..=15 => [10_000, 20_000][config % 2],
        _ => [2_500, 5_000, 10_000, 20_000][config % 4],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(0, |count| u64::from(count & 0x3f)),
    };
    frame_us * frames
}

/// Whether an Opus packet is coded in stereo (the TOC byte's `s` bit).
pub(crate) fn opus_is_stereo(packet: &[u8]) -> bool {
    packet.first().is_some_and(|toc| toc & 0x04 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_header_gives_the_size_without_scaling_bits() {
        // 1280×720 with both scaling modes set to 2 (top two bits 10).
        let key = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x85, 0xd0, 0x82, 0xff];
        assert_eq!(
            vp8_keyframe(&key),
            Some(FrameSize {
                width: 1280,
                height: 720
            })
        );
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(vp8_keyframe(&inter), None);
        let mut no_start_code = key;
        no_start_code[4] = 0;
        assert_eq!(vp8_keyframe(&no_start_code), None);
        assert_eq!(vp8_keyframe(&key[..9]), None);
        let mut zero_width = key;
        zero_width[6..8].copy_from_slice(&[0, 0x80]);
        assert_eq!(vp8_keyframe(&zero_width), None);
    }

    #[test]
    fn opus_durations_follow_the_toc_table() {
        // (TOC, optional frame-count byte, µs): SILK 60 ms, hybrid 10 ms, CELT 2.5 ms, code 1
        // and 2 (two frames), code 3 with its count, and packets that say nothing.
        let cases: [(&[u8], u64); 9] = [
            (&[3 << 3], 60_000),
            (&[(12 << 3) | 0x04], 10_000),
            (&[16 << 3], 2_500),
            (&[(31 << 3) | 1], 40_000),
            (&[(9 << 3) | 2], 40_000),
            (&[(31 << 3) | 3, 0x83], 60_000),
            (&[(31 << 3) | 3], 0),
            (&[], 0),
            (&[(15 << 3) | 0x04, 0xaa, 0xbb], 20_000),
        ];
        for (packet, us) in cases {
            assert_eq!(opus_duration_us(packet), us, "{packet:02x?}");
        }
        assert!(opus_is_stereo(&[(15 << 3) | 0x04]));
        assert!(!opus_is_stereo(&[15 << 3]));
        assert!(!opus_is_stereo(&[]));
    }
}
