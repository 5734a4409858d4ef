//! The README's promises that a test can check: it starts with the two newcomer commands,
//! and every figure it embeds exists in the repository as a valid, non-trivial PNG.

use std::path::Path;

#[test]
fn readme_starts_with_the_two_commands_and_embeds_valid_figures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first_block = text.split("```").nth(1).expect("README has no code block");
    assert!(
        first_block.contains("cargo run --release -- train")
            && first_block.contains("cargo test --release"),
        "the first code block must hold the train and test commands:\n{first_block}"
    );
    let images: Vec<&str> = text
        .split("![")
        .skip(1)
        .filter_map(|s| {
            s.split_once("](")
                .and_then(|(_, rest)| rest.split_once(')'))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        images.iter().any(|p| p.ends_with("transients.png")),
        "README embeds no transient figure: {images:?}"
    );
    for path in images {
        let bytes = std::fs::read(root.join(path))
            .unwrap_or_else(|e| panic!("README embeds {path}, which cannot be read: {e}"));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{path} is not a PNG");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert!(w >= 400 && h >= 300, "{path} is only {w}x{h}");
    }
}
