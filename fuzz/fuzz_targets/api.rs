//! Requests on the slirp4netns-compatible API socket (with a dataplane stand-in that answers
//! every command without binding anything) and on the daemon's socket (parsing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::sync::mpsc;
use warren::api::{Guest, answer};
use warren::runtime::Command;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(4);
        let guest = Guest { v4: "10.0.2.100".parse().unwrap(), v6_net: Some("fd00::/64".parse().unwrap()) };
        let responder = async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Add(_, r) => drop(r.send(Err("not binding while fuzzing".into()))),
                    Command::List(r) => drop(r.send(Vec::new())),
                    Command::Remove(_, r) => drop(r.send(Ok(()))),
                    Command::Stats(r) => drop(r.send(Default::default())),
                    Command::Capture(_, r) => drop(r.send(Err("no capture while fuzzing".into()))),
                    _ => {}
                }
            }
        };
        let ask = async move {
            let out = answer(data, &tx, &guest).await;
            let v: serde_json::Value = serde_json::from_str(&out).expect("answers are JSON");
            assert!(v.get("return").is_some() || v.get("error").is_some(), "{out}");
        };
        tokio::join!(responder, ask);
    });
    let _ = serde_json::from_slice::<warren::daemon::Request>(data);
});
