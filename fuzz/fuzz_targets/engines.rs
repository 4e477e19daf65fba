//! Differential fuzzing of the two engines: the same client bytes and the same container reply
//! through a router on the fast path and a router on Pingora's proxy alone. The client must see
//! the same from both (or both refuse), and never bytes of one response as the answer to another.
//!
//! Once per fuzz process two real router processes are started (see `stage`), each with its own
//! two scripted containers: thread t1 answers the first request head it reads with the input's
//! reply bytes and every later one honestly; thread t2 always answers honestly. Each input is sent
//! to both routers at once on new connections (see `input` for its format), what the client got
//! is read as a browser reads it (`reading`) and judged (`verdict`).
#![no_main]

#[path = "engines/client.rs"]
mod client;
#[path = "engines/container.rs"]
mod container;
#[path = "engines/input.rs"]
mod input;
#[path = "../../tests/integration/common/ports.rs"]
mod ports;
#[path = "engines/reading.rs"]
mod reading;
#[path = "engines/router.rs"]
mod router;
#[path = "engines/stage.rs"]
mod stage;
#[path = "engines/verdict.rs"]
mod verdict;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let case = input::Case::parse(data);
    let stage = stage::Stage::get();
    let [fast, pingora] = stage.run(&case);
    if let Err(why) = stage.check_routers() {
        panic!(
            "{why}\n{}",
            verdict::describe(&case, &fast, &pingora, stage.logs())
        );
    }
    let methods = reading::request_methods(case.client);
    let fast_seen = verdict::Seen::read(&fast, &methods);
    let pingora_seen = verdict::Seen::read(&pingora, &methods);
    let context = || verdict::describe(&case, &fast, &pingora, stage.logs());
    if let Err(why) = fast_seen.check_isolation(&fast.log, fast.nonce) {
        panic!("fast path: {why}\n{}", context());
    }
    if let Err(why) = pingora_seen.check_isolation(&pingora.log, pingora.nonce) {
        panic!("Pingora proxy: {why}\n{}", context());
    }
    if let Err(why) = verdict::compare(&fast_seen, &pingora_seen) {
        panic!("the engines differ: {why}\n{}", context());
    }
});
