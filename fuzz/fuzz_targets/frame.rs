//! Frames from a container through the whole data path: switch (bridge networks), gateway
//! classification, NAT flow set-up, per-flow smoltcp stacks, DNS, ICMP. Input format: see
//! `warren::runtime::fuzzing`. Must run in a network namespace holding only `lo`.
#![no_main]

use libfuzzer_sys::fuzz_target;

static ISOLATED: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    ISOLATED.call_once(|| {
        warren::runtime::fuzzing::assert_isolated();
        // As the warren binary does: TCP buffers from mmap, not memset by calloc.
        warren::sys::tune_allocator();
    });
    warren::runtime::fuzzing::run(data);
});
