//! Decodes a raw little-endian f32 file of posteriors (frames x classes,
//! LipNet's vocabulary: space, a-z, blank) greedily, openly and under a
//! grammar: a debugging aid for decoder changes.
//!
//!     cargo run -p mouthmap-decoder --example decode_raw -- POSTERIORS.f32 [grid]

use mouthmap_decoder::ctc::{self, Open, Posteriors};
use mouthmap_decoder::grammar::WordGrammar;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&args[1]).expect("a posteriors file");
    let probs: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let vocab: Vec<String> = std::iter::once(" ".to_string())
        .chain(('a'..='z').map(String::from))
        .chain(["<blank>".to_string()])
        .collect();
    let post = Posteriors {
        probs: &probs,
        classes: vocab.len(),
        blank: 27,
    };
    let text = |d: &ctc::Decoded| {
        d.labels
            .iter()
            .map(|&l| vocab[l].as_str())
            .collect::<String>()
    };
    println!("greedy: {}", text(&ctc::greedy(post)));
    println!("beam:   {}", text(&ctc::beam_search(post, 8, 1e-4, &Open)));
    if let Some(name) = args.get(2) {
        let g = WordGrammar::named(name, &vocab).expect("a grammar");
        println!("{name}:   {}", text(&ctc::beam_search(post, 8, 1e-4, &g)));
    }
}
