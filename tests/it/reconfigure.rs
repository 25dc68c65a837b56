//! `reconfigure` and the tender in `put-image`'s answer, end to end: the real
//! daemon on temporary directories, the CLI to set the scene and the api
//! client for the requests the CLI does not make.

use crate::support;

use fulmar::api::image::{DeviceKind, Target, TenderReport};
use fulmar::api::label::Label;
use fulmar::api::protocol::{ErrorKind, Reply, Request};
use fulmar::api::unikernel::{
    BlockConfig, RestartPolicy, RunState, UnikernelConfig, UnikernelInfo,
};
use fulmar::api::validate::Problem;
use fulmar::wire::client::ClientError;
use support::daemon::{Host, eventually};
use support::images::Spec;

fn label(name: &str) -> Label {
    Label::new(name).unwrap()
}

fn image() -> String {
    Spec::new(Target::Hvt, &[]).path().display().to_string()
}

fn info(host: &Host, name: &str) -> UnikernelInfo {
    host.with_client(async |client| {
        match client
            .call(Request::Info { name: label(name) })
            .await
            .unwrap()
        {
            Reply::Unikernel { unikernel } => *unikernel,
            other => panic!("{other:?}"),
        }
    })
}

fn reconfigure(host: &Host, config: UnikernelConfig) -> Result<UnikernelInfo, ClientError> {
    host.with_client(async |client| {
        client
            .call(Request::Reconfigure { config })
            .await
            .map(|reply| match reply {
                Reply::Unikernel { unikernel } => *unikernel,
                other => panic!("{other:?}"),
            })
    })
}

fn pid(info: &UnikernelInfo) -> u32 {
    match info.state {
        RunState::Running { pid, .. } => pid,
        ref other => panic!("not running: {other:?}"),
    }
}

#[test]
fn new_settings_restart_it_with_the_same_image() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&[
        "create",
        "web",
        &image(),
        "--mem",
        "64",
        "--",
        "print=first run",
        "sleep-forever",
    ]);
    let before = info(&host, "web");
    let mut config = before.config.clone();
    config.memory_mb = 96;
    config.args = vec!["print=second run".into(), "sleep-forever".into()];
    config.restart = RestartPolicy::Always;
    config.startup_priority = 7;
    let after = reconfigure(&host, config.clone()).unwrap();
    assert_eq!(after.config, config);
    assert_eq!(after.digest, before.digest, "the stored image is kept");
    assert_ne!(pid(&after), pid(&before), "a new run");
    assert!(
        after.argv.iter().any(|a| a == "--mem=96"),
        "{:?}",
        after.argv
    );
    let old = nix::unistd::Pid::from_raw(pid(&before) as i32);
    assert!(
        nix::sys::signal::kill(old, None).is_err(),
        "the old run is gone"
    );
    eventually("the new run prints its new arguments", || {
        host.ok(&["console", "web"]).contains("second run")
    });
    let listed = &host.list()[0];
    assert_eq!(listed["memory_mb"], 96);
    assert_eq!(listed["state"], "running");
}

#[test]
fn a_refused_change_leaves_it_running_as_it_was() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    let before = info(&host, "web");
    let mut config = before.config.clone();
    config.cpu = 999;
    config.memory_mb = 0;
    let Err(ClientError::Daemon(e)) = reconfigure(&host, config) else {
        panic!("accepted");
    };
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.problems.contains(&Problem::NoMemory), "{e:?}");
    assert!(
        e.problems
            .iter()
            .any(|p| matches!(p, Problem::Cpu { cpu: 999, .. })),
        "{e:?}"
    );
    let now = info(&host, "web");
    assert_eq!(now.config, before.config);
    assert_eq!(pid(&now), pid(&before), "the same run goes on");
}

#[test]
fn its_own_name_memory_and_block_device_are_not_in_its_way() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "1"]);
    let policy: serde_json::Value = serde_json::from_str(&host.ok(&["policy", "--json"])).unwrap();
    // More than half the host: counted twice, it would not fit.
    let most = (policy["memory_mb"].as_u64().unwrap() * 3 / 4).to_string();
    // spt has no memory ceiling of its own, unlike hvt.
    let spec = Spec::new(Target::Spt, &[("storage", DeviceKind::Block)]);
    host.ok(&[
        "create",
        "db",
        &spec.path().display().to_string(),
        "--mem",
        &most,
        "--block",
        "storage:disk",
        "--",
        "sleep-forever",
    ]);
    let before = info(&host, "db");
    let mut config = before.config.clone();
    config.blocks = vec![BlockConfig {
        device: "storage".into(),
        block: label("disk"),
        sector_size: Some(4096),
    }];
    let after = reconfigure(&host, config).unwrap();
    assert_eq!(after.config.blocks[0].sector_size, Some(4096));
    assert_ne!(pid(&after), pid(&before));
}

#[test]
fn a_stopped_unikernel_starts_and_an_unknown_one_is_not_found() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    host.ok(&["destroy", "web"]);
    let mut config = info(&host, "web").config;
    config.args = vec!["print=back".into(), "sleep-forever".into()];
    let after = reconfigure(&host, config.clone()).unwrap();
    pid(&after);
    config.name = label("nobody");
    let Err(ClientError::Daemon(e)) = reconfigure(&host, config) else {
        panic!("accepted");
    };
    assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");
    assert!(e.message.contains("no unikernel named nobody"), "{e:?}");
}

#[test]
fn put_image_names_the_tender_or_why_there_is_none() {
    let mut host = Host::new();
    host.start(&[]);
    let report = |spec: Spec| {
        host.with_client(async |client| {
            let file = tokio::fs::File::open(spec.path()).await.unwrap();
            match client
                .send_data(Request::PutImage { compressed: false }, file, |_| {})
                .await
                .unwrap()
            {
                Reply::Image { image, tender } => (image, tender),
                other => panic!("{other:?}"),
            }
        })
    };
    let (image, tender) = report(Spec::new(Target::Spt, &[]));
    assert_eq!(image.target, Target::Spt);
    let TenderReport::Found { path, abi_version } = tender else {
        panic!("{tender:?}");
    };
    assert!(path.ends_with("/solo5-spt"), "{path}");
    assert_eq!(abi_version, 2);
    let (_, tender) = report(Spec::new(Target::Hvt, &[]).with_abi(9));
    let TenderReport::Missing { error } = tender else {
        panic!("{tender:?}");
    };
    assert!(error.contains("ABI"), "{error}");
}
