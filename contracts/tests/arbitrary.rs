//! No input makes a contract decoder panic: arbitrary bytes, and arbitrary
//! metadata in a well-formed envelope, are parsed or refused with a
//! `ContractError`.

use mouthmap_contracts::{
    FrameEvent, LogitsEvent, MouthEvent, Transcript, decode, encode_envelope,
};
use proptest::prelude::*;

fn all_decoders(bytes: &[u8]) {
    let _ = decode::<FrameEvent>(bytes, None, None);
    let _ = decode::<MouthEvent>(bytes, None, None);
    let _ = decode::<LogitsEvent>(bytes, None, None);
    let _ = decode::<Transcript>(bytes, None, None);
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..8,
        Just(u32::MAX as u64),
        Just(1u64 << 31),
        Just(16384),
        any::<u32>().prop_map(u64::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        all_decoders(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_the_magic_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut value = b"MMAP\x00\x01".to_vec();
        value.extend_from_slice(&bytes);
        all_decoders(&value);
    }

    #[test]
    fn arbitrary_sizes_in_a_valid_envelope_never_panic(
        w in size(), h in size(), frames in 1usize..5, classes in size(),
        window in size(), valid in size(), payload in 0usize..64,
        format in prop_oneof![Just("i420"), Just("gray8"), Just("jpeg")],
        sizes in proptest::collection::vec(any::<u32>(), 0..5),
    ) {
        let infos: Vec<_> = (0..frames)
            .map(|i| serde_json::json!({"index": i, "pts_ns": 0, "ingest_us": 0}))
            .collect();
        let quality = serde_json::json!({"face_score": 0.0, "face_found": false, "detected": false,
            "box_width": 0.0, "brightness": 0.0, "sharpness": 0.0});
        let metas = [
            serde_json::json!({"event": "chunk", "stream_id": "s", "seq": 0, "width": w, "height": h,
                "format": format, "frames": infos, "sizes": sizes}),
            serde_json::json!({"event": "chunk", "stream_id": "s", "seq": 0, "width": w, "height": h,
                "frames": infos, "quality": vec![quality; frames]}),
            serde_json::json!({"event": "window", "stream_id": "s", "first_frame": 0, "frames": window,
                "valid_frames": valid, "classes": classes, "vocabulary": ["a", "b"], "blank": 1,
                "model_name": "m", "model_version": "1", "newest_ingest_us": 0}),
        ];
        for meta in metas {
            all_decoders(&encode_envelope(&meta, &vec![0u8; payload]));
        }
    }
}
