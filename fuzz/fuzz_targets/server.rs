//! libFuzzer target: one input through `/validate`, `/mutate`, `/convert` or `check`'s YAML
//! input, chosen by its first byte; the reply is checked by `admission::fuzzing::exercise`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    admission::fuzzing::exercise(data);
});
