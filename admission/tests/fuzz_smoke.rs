//! A short, deterministic fuzz run in the normal test suite: every seed in `fuzz/corpus/server`
//! and every request fixture (`fixtures/{validate,mutate,convert}`, `fixtures/manifests`)
//! through `admission::fuzzing::exercise`, plus a few thousand mutations of them (bit flips,
//! interesting bytes, truncations, splices, duplicated and deleted ranges, huge numbers) from a
//! seeded PRNG. `exercise` panics when a reply breaks the contract (a 500, an unexpected status,
//! a 200 that is not a well-formed review for the request's uid, a bad `/mutate` patch), so any
//! such input fails this test and is printed. The long coverage-guided run is `fuzz/run.sh`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use admission::fuzzing::{exercise, Target};

const MUTATIONS: usize = 10000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// The seed corpus as stored (first byte picks the target).
fn corpus() -> Vec<(String, Vec<u8>)> {
    files(&repo().join("fuzz/corpus/server"), "")
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p.display().to_string(), bytes)
        })
        .collect()
}

/// The fixtures as fuzz inputs: selector byte + request body (or manifest).
fn fixture_inputs() -> Vec<(String, Vec<u8>)> {
    let root = repo().join("fixtures");
    let mut out = Vec::new();
    for (selector, dir, suffix) in [
        (0u8, "validate", ".request.json"),
        (1, "mutate", ".request.json"),
        (2, "convert", ".request.json"),
        (3, "manifests", ".yaml"),
        (3, "manifests/update", ".yaml"),
    ] {
        for path in files(&root.join(dir), suffix) {
            let mut input = vec![selector];
            input.extend(std::fs::read(&path).expect("fixture"));
            out.push((path.display().to_string(), input));
        }
    }
    out
}

/// SplitMix64: small, seeded, the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-",
    b"0",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"9223372036854775808",
    b"99999999999999999999Ei",
    b"0.0000001Ki",
    b"\xff",
    b"\x00",
    b"\n- ",
    b": &a\n",
    b"*a",
    b"!!binary ",
    b"---\n",
    b"\"v1alpha1\"",
    b"\"UPDATE\"",
    b"\"DELETE\"",
    b"*/4294967295",
];

/// One mutation of `input`, possibly using `other` (splices). Keeps at least the selector byte.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = out.len().max(1);
        match rng.below(8) {
            // Flip one bit (the selector too, now and then: another handler for the same body).
            0 => {
                let at = rng.below(len);
                if let Some(b) = out.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            // Overwrite with an interesting token.
            1 | 2 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                let at = 1 + rng.below(len);
                let end = (at + token.len()).min(out.len());
                if at <= out.len() {
                    out.splice(at..end, token.iter().copied());
                }
            }
            // Insert an interesting token.
            3 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                let at = (1 + rng.below(len)).min(out.len());
                out.splice(at..at, token.iter().copied());
            }
            // Truncate.
            4 => out.truncate(1 + rng.below(len)),
            // Splice: our prefix, the other input's suffix.
            5 => {
                let cut = (1 + rng.below(len)).min(out.len());
                let from = rng.below(other.len().max(1)).min(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            // Duplicate a range (deeper nesting, repeated keys).
            6 => {
                let start = (1 + rng.below(len)).min(out.len());
                let end = (start + rng.below(64)).min(out.len());
                let chunk = out[start..end].to_vec();
                out.splice(end..end, chunk);
            }
            // Delete a range.
            _ => {
                let start = (1 + rng.below(len)).min(out.len());
                let end = (start + rng.below(32)).min(out.len());
                out.drain(start..end);
            }
        }
    }
    out
}

/// Runs one input; on a broken reply, fails with the input so it can be added to the corpus.
fn run(name: &str, input: &[u8]) -> Target {
    match std::panic::catch_unwind(AssertUnwindSafe(|| exercise(input))) {
        Ok(target) => target,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            let shown: String = String::from_utf8_lossy(input).chars().take(4000).collect();
            let saved = std::env::temp_dir().join("admission-fuzz-smoke-failure");
            let _ = std::fs::write(&saved, input);
            panic!(
                "{name}: exercise failed: {message}\ninput (saved as {}; {} bytes, selector {}):\n{shown}",
                saved.display(),
                input.len(),
                input.first().copied().unwrap_or(0)
            );
        }
    }
}

#[test]
fn seed_corpus_covers_every_target_and_passes() {
    let corpus = corpus();
    let mut seen = Vec::new();
    for (name, input) in &corpus {
        let target = run(name, input);
        if !seen.contains(&target) {
            seen.push(target);
        }
    }
    for target in [
        Target::Validate,
        Target::Mutate,
        Target::Convert,
        Target::CheckYaml,
    ] {
        assert!(
            seen.contains(&target),
            "fuzz/corpus/server has no seed for {target:?}"
        );
    }
}

#[test]
fn fixtures_and_thousands_of_mutations_never_break_the_reply_contract() {
    let mut seeds = corpus();
    seeds.extend(fixture_inputs());
    assert!(seeds.len() > 20, "only {} seeds", seeds.len());
    for (name, input) in &seeds {
        run(name, input);
    }
    let mut rng = Rng(0x005e_ed0f_ad31_5510);
    let mut counts = [0usize; 4];
    for i in 0..MUTATIONS {
        let (name, base) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, other);
        let target = run(&format!("mutation {i} of {name}"), &input);
        counts[target as usize] += 1;
    }
    // Every handler got a share of the mutations.
    assert!(
        counts.iter().all(|&n| n >= MUTATIONS / 20),
        "mutations per target (validate, mutate, convert, check): {counts:?}"
    );
}
