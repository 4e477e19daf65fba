//! What private previews cost a request. `access_check`: the gate alone, for a public session, a
//! private one whose grant is remembered, a grant seen for the first time (its MAC checked and
//! remembered), a tampered grant (refused), and a preview link (its Ed25519 token verified, and
//! exchanged for a grant). `access_decide`: the whole decision both engines make for a table hit
//! (resolve, gate, count) against the resolution alone, at 100k sessions.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use session_router::lifecycle::{Activity, Lifecycle, Wakes, Watch};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use session_router::access::mint::{self, Link};
use session_router::access::{Gate, Grants, Presented, Verdict, Verifier};
use session_router::access_log::{AccessLog, DEFAULT_BUFFER_BYTES};
use session_router::config::Config;
use session_router::decide::{Asked, Decision};
use session_router::drain::Draining;
use session_router::health::Health;
use session_router::metrics::Metrics;
use session_router::pages::RequestKind;
use session_router::routing::classify;
use session_router::shared::Shared;
use session_router::store::{SessionAccess, ShareLevel};
use session_router::upgrades::Upgrades;

mod common;

const AUDIENCE: &str = "session-router";
const SECRET: &[u8] = b"a grant secret of at least 32 bytes, for the bench";
const SESSIONS: usize = 100_000;

/// A key pair as the editing app holds it: the router's JWKS, and the private key that signs links.
struct Keys {
    jwks: String,
    private: String,
}

fn keys() -> Keys {
    let key = mint::new_key("k1").expect("key pair");
    Keys {
        jwks: json!({"keys": [key["jwk"]]}).to_string(),
        private: key["private_key"].as_str().expect("private key").to_owned(),
    }
}

fn link_token(keys: &Keys, client: &str, thread: &str) -> String {
    let link = Link {
        audience: AUDIENCE,
        client,
        thread,
        ttl: Duration::from_secs(600),
        gen: 0,
    };
    mint::token(&keys.private, "k1", &link).expect("token")
}

/// Grants signed with the secret every gate here holds, as another router of the fleet signs
/// them: each gate accepts them without having seen them.
fn signer() -> Grants {
    Grants::new(SECRET, Duration::from_secs(3600)).expect("secret")
}

/// A gate as the server builds it, private or public by default.
fn gate(config: &Config, keys: &Keys, default: ShareLevel) -> Gate {
    let verifier = Verifier::from_jwks(&keys.jwks, AUDIENCE).expect("jwks");
    Gate::new(
        default,
        Some(verifier),
        signer(),
        config.routing.cookies.clone(),
    )
}

fn with_grant(grant: &str) -> Presented<'_> {
    Presented {
        token: None,
        grant: Some(grant),
    }
}

fn bench_check(c: &mut Criterion) {
    let config = common::config();
    let keys = keys();
    let gate = gate(&config, &keys, ShareLevel::Private);
    let public = SessionAccess {
        level: Some(ShareLevel::Public),
        generation: 0,
    };
    let private = SessionAccess {
        level: Some(ShareLevel::Private),
        generation: 0,
    };
    let (client, thread) = ("client7", "thread7");
    let grant = match gate.check(
        private,
        client,
        thread,
        Presented {
            token: Some(&link_token(&keys, client, thread)),
            grant: None,
        },
    ) {
        Verdict::Exchange {
            grant: Some(grant), ..
        } => grant,
        other => panic!("a valid link is exchanged, got {other:?}"),
    };
    let mut tampered = grant.clone();
    tampered.insert(tampered.len() - 2, 'x');
    let token = link_token(&keys, client, thread);
    let verifier = Verifier::from_jwks(&keys.jwks, AUDIENCE).expect("jwks");

    let mut group = c.benchmark_group("access_check");
    group.throughput(Throughput::Elements(1));
    group.bench_function("public", |b| {
        b.iter(|| gate.check(public, client, thread, Presented::default()))
    });
    group.bench_function("grant_remembered", |b| {
        b.iter(|| {
            let verdict = gate.check(private, client, thread, with_grant(&grant));
            debug_assert!(matches!(verdict, Verdict::Open(_)));
            verdict
        })
    });
    // Each grant of a new access generation is a new cookie, so each check misses the cache.
    // The grants are made in batches outside the timing.
    let signer = signer();
    let mut generation = 0u64;
    group.bench_function("grant_first_seen", |b| {
        b.iter_batched(
            || {
                generation += 1;
                signer.issue(client, thread, generation)
            },
            |fresh| {
                let verdict = gate.check(private, client, thread, with_grant(&fresh));
                debug_assert!(matches!(verdict, Verdict::Open(_)));
                verdict
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("grant_tampered", |b| {
        b.iter(|| {
            let verdict = gate.check(private, client, thread, with_grant(&tampered));
            debug_assert!(matches!(verdict, Verdict::Denied(_)));
            verdict
        })
    });
    group.bench_function("token_verify", |b| {
        b.iter(|| verifier.verify(&token, client, thread).expect("valid"))
    });
    group.bench_function("token_exchange", |b| {
        let presented = Presented {
            token: Some(&token),
            grant: None,
        };
        b.iter(|| {
            let verdict = gate.check(private, client, thread, presented);
            debug_assert!(matches!(verdict, Verdict::Exchange { grant: Some(_), .. }));
            verdict
        })
    });
    group.finish();
}

/// The parts both engines share, around `resolver`, with a gate private or public by default.
fn shared(
    config: &Config,
    keys: &Keys,
    resolver: Arc<session_router::table::Resolver>,
    default: ShareLevel,
) -> Shared {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let lifecycle = Lifecycle {
        activity: Arc::new(Activity::new(
            config.activity.interval,
            config.activity.queue,
            metrics.clone(),
        )),
        wakes: Arc::new(Wakes::new(
            None,
            resolver.store().clone(),
            config.wake.cooldown,
            metrics.clone(),
        )),
        watch: Arc::new(Watch::default()),
        wait_limit: config.wake.wait_timeout,
    };
    Shared {
        lifecycle: Arc::new(lifecycle),
        resolver,
        gate: Arc::new(gate(config, keys, default)),
        health: Arc::new(Health::new(&config.health, metrics.clone())),
        metrics,
        upgrades: Arc::new(Upgrades::default()),
        draining: Arc::new(Draining::default()),
        access_log: Arc::new(AccessLog::new(config.log.format, DEFAULT_BUFFER_BYTES)),
    }
}

/// Classifies one request and decides it as the engines do; every request is a table hit that
/// is forwarded. The request parts are those of `common::resolve`, so the two differ by the
/// access work alone.
fn decide(config: &Config, shared: &Shared, host: &str, path: &str, cookie: &str) -> Decision {
    let target = classify(&config.routing.hosts, &common::parts(host, path)).expect("routable");
    let asked = Asked {
        target: &target,
        requester: None,
        kind: RequestKind::Asset,
        safe_method: true,
        path,
        query: None,
        tls: false,
        may_wake: false,
        waiting: false,
    };
    let mut decision = common::poll_ready(shared.decide(&asked, |thread| {
        config.routing.cookies.grant_in([cookie.as_bytes()], thread)
    }));
    assert!(matches!(decision, Decision::Forward { .. }), "forwarded");
    decision.settle(shared);
    decision
}

fn bench_decide(c: &mut Criterion) {
    let config = common::config();
    let keys = keys();
    let resolver = Arc::new(common::resolver(&config, common::table(SESSIONS, 0)));
    let public = shared(&config, &keys, resolver.clone(), ShareLevel::Public);
    let private = shared(&config, &keys, resolver.clone(), ShareLevel::Private);
    let signer = signer();
    // Each request with its session's grant cookie among a browser's other cookies, every grant
    // remembered before the timing (checked once by the gate), as on a preview already open.
    let reqs: Vec<(String, String, String)> = common::requests(SESSIONS)
        .into_iter()
        .map(|(host, path)| {
            let client = host.split('.').nth(1).expect("client").to_owned();
            let thread = path.split('/').nth(2).expect("thread").to_owned();
            let grant = signer.issue(&client, &thread, 0);
            let cookie = format!(
                "theme=dark; editor_tab=preview; {}={grant}",
                config.routing.cookies.grant_name(&thread)
            );
            (host, path, cookie)
        })
        .collect();
    for (host, path, cookie) in &reqs {
        let target = classify(&config.routing.hosts, &common::parts(host, path)).expect("routable");
        let grant = config
            .routing
            .cookies
            .grant_in([cookie.as_bytes()], &target.thread);
        let verdict = private.gate.check(
            SessionAccess::default(),
            &target.client,
            &target.thread,
            Presented { token: None, grant },
        );
        assert!(matches!(verdict, Verdict::Open(_)), "a valid grant");
    }

    let mut group = c.benchmark_group("access_decide");
    group.throughput(Throughput::Elements(1));
    let mut n = 0usize;
    group.bench_function("resolve_only", |b| {
        b.iter(|| {
            let (host, path, _) = &reqs[n % reqs.len()];
            n += 1;
            common::resolve(&config, &resolver, host, path)
        })
    });
    group.bench_function("decide_public", |b| {
        b.iter(|| {
            let (host, path, cookie) = &reqs[n % reqs.len()];
            n += 1;
            decide(&config, &public, host, path, cookie)
        })
    });
    group.bench_function("decide_private_grant", |b| {
        b.iter(|| {
            let (host, path, cookie) = &reqs[n % reqs.len()];
            n += 1;
            decide(&config, &private, host, path, cookie)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench_check, bench_decide
}
criterion_main!(benches);
