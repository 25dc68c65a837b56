//! The daemon end to end: the real binary on a temporary socket and
//! directories, driven through the CLI.

use crate::support;

use fulmar::api::image::{DeviceKind, Target};
use nix::sys::signal::Signal;
use support::daemon::{Host, eventually};
use support::images::Spec;

fn image() -> String {
    Spec::new(Target::Hvt, &[]).path().display().to_string()
}

#[test]
fn create_list_console_destroy() {
    let mut host = Host::new();
    host.start(&[]);
    let out = host.ok(&[
        "create",
        "web",
        &image(),
        "--mem",
        "64",
        "--",
        "print=hello world",
        "sleep-forever",
    ]);
    assert!(out.starts_with("web: running, pid "), "{out}");
    let list = host.list();
    assert_eq!(list.len(), 1);
    let web = &list[0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["state"], "running");
    assert_eq!(web["target"], "hvt");
    assert_eq!(web["memory_mb"], 64);
    assert_eq!(web["cpu"], 0);
    assert_eq!(web["restarts"], 0);
    assert!(web["pid"].as_u64().unwrap() > 1);
    assert_eq!(web["digest"].as_str().unwrap().len(), 64);
    eventually("the console shows the guest", || {
        host.ok(&["console", "web"]).contains("hello world\n")
    });
    let console = host.ok(&["console", "web", "--lines", "1"]);
    assert_eq!(console, "hello world\n");
    let table = host.ok(&["list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("web"), "{table}");
    let out = host.ok(&["destroy", "web"]);
    assert_eq!(out, "web: stopped\n");
    let web = &host.list()[0];
    assert_eq!(web["state"], "stopped");
    assert_eq!(web["exit_code"], 1, "hvt exits 1 on SIGTERM");
    host.ok(&["remove", "web"]);
    assert!(host.list().is_empty());
}

fn row(host: &Host, name: &str) -> serde_json::Value {
    host.list().into_iter().find(|u| u["name"] == name).unwrap()
}

/// The cell of the `list` table in `name`'s row and the `column` column.
fn cell(host: &Host, name: &str, column: &str) -> String {
    let table = host.ok(&["list"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let at = header.find(column).unwrap();
    let line = lines.find(|l| l.starts_with(&format!("{name} "))).unwrap();
    line[at..].split("  ").next().unwrap().to_owned()
}

#[test]
fn a_killed_tender_comes_back_under_on_failure_not_under_never() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    let never = ["--restart", "never", "--", "sleep-forever"];
    host.ok(&[&["create", "db", &image()][..], &never].concat());
    let (web, db) = (host.pid_of("web"), host.pid_of("db"));
    for pid in [web, db] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    }
    eventually("web runs again", || {
        let web_row = row(&host, "web");
        web_row["state"] == "running" && web_row["restarts"] == 1
    });
    assert_ne!(host.pid_of("web"), web);
    let web_row = row(&host, "web");
    assert_eq!(
        (web_row["signal"].clone(), web_row["exit_code"].clone()),
        (9.into(), serde_json::Value::Null)
    );
    assert_eq!(cell(&host, "web", "RESTARTS"), "1");
    assert_eq!(cell(&host, "web", "LAST EXIT"), "killed by SIGKILL");
    let info = host.ok(&["info", "web"]);
    for shown in [
        "restart    on-failure\n",
        "restarts   1\n",
        "last exit  killed by SIGKILL\n",
    ] {
        assert!(info.contains(shown), "{shown:?} not in\n{info}");
    }
    eventually("db stays down", || host.state_of("db") == "exited");
    let db_row = row(&host, "db");
    assert_eq!(
        (db_row["signal"].clone(), db_row["restarts"].clone()),
        (9.into(), 0.into())
    );
}

#[test]
fn exit_0_restarts_only_under_always() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "done", &image(), "--", "exit=0"]);
    host.ok(&[
        "create",
        "again",
        &image(),
        "--restart",
        "always",
        "--",
        "exit=0",
    ]);
    eventually("again restarts", || {
        row(&host, "again")["restarts"].as_u64() >= Some(1)
    });
    assert_eq!(row(&host, "again")["exit_code"], 0);
    assert_eq!(host.state_of("done"), "exited");
    let done = row(&host, "done");
    assert_eq!(
        (done["exit_code"].clone(), done["restarts"].clone()),
        (0.into(), 0.into())
    );
    assert_eq!(cell(&host, "done", "LAST EXIT"), "exited 0");
}

#[test]
fn a_bad_restart_policy_names_the_accepted_forms() {
    let mut host = Host::new();
    host.start(&[]);
    for bad in ["sometimes", "on-failure:x", "on-failure:300", "on-failure:"] {
        let err = host.fails(&["create", "web", &image(), "--restart", bad]);
        assert!(
            err.contains("write never, on-failure, on-failure:CODES"),
            "{bad}: {err}"
        );
    }
    assert!(host.list().is_empty());
}

#[test]
fn errors_are_one_line_and_change_nothing() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    let before = host.list();
    for (args, says) in [
        (
            vec!["create", "web", image().as_str()],
            "a unikernel named web exists already",
        ),
        (
            vec!["create", "a/b", image().as_str()],
            "contains '/' at position 2",
        ),
        (
            vec!["create", "x", "/nonexistent/image"],
            "cannot read the image /nonexistent/image",
        ),
        (
            vec!["create", "y", image().as_str(), "--cpu", "999"],
            "CPU 999 is not online",
        ),
        (
            vec!["create", "z", image().as_str(), "--net", "service0:br9"],
            "declares no device service0",
        ),
        (vec!["destroy", "nope"], "no unikernel named nope"),
        (vec!["remove", "web"], "web is running: destroy it first"),
        (vec!["console", "nope"], "no unikernel named nope"),
    ] {
        let err = host.fails(&args);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("fulmar: "), "{err}");
    }
    assert_eq!(host.list(), before);
}

#[test]
fn without_a_daemon_clients_start_one_unless_told_not_to() {
    let host = Host::new();
    let err = host.fails(&["list"]);
    assert!(err.contains("no fulmar daemon is listening"), "{err}");
    let out = host.command(&["list", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(String::from_utf8_lossy(&out.stderr).contains("started a daemon in the background"));
    // It keeps running for the next client, which says nothing about starting.
    let again = host.command(&["list"]).output().unwrap();
    assert!(again.status.success());
    assert!(
        again.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Stop the background daemon this test started.
    let pid: i32 = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                let needle = format!("FULMAR_DIR={}", host.data.path().display());
                env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
            }) && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("daemon"))
        })
        .expect("the background daemon");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
}

#[test]
fn a_second_daemon_is_refused() {
    let mut host = Host::new();
    host.start(&[]);
    let out = host.command(&["daemon"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    // The first one still answers.
    host.ok(&["list"]);
}

#[test]
fn a_corrupt_state_file_stops_the_daemon_and_is_kept() {
    let host = Host::new();
    let state = host.data.path().join("state.json");
    std::fs::write(
        &state,
        "{\"format\": 1, \"state\": {\"unikernels\": [oops]}}",
    )
    .unwrap();
    let out = host.command(&["daemon"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is corrupt at line 1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"format\": 1, \"state\": {\"unikernels\": [oops]}}"
    );
}

#[test]
fn an_oversized_state_file_stops_the_daemon_unread_and_is_kept() {
    let host = Host::new();
    let state = host.data.path().join("state.json");
    let size = fulmar::host::state::MAX_SIZE + 1;
    // Sparse, so the test costs neither disk nor time.
    std::fs::File::create(&state)
        .unwrap()
        .set_len(size)
        .unwrap();
    let out = host.command(&["daemon"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("is {size} bytes or more")), "{err}");
    assert!(err.contains("move it aside"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::metadata(&state).unwrap().len(), size);
}

/// The `args` of every unikernel named `name` in the state file at `path`.
fn saved_args(path: &std::path::Path, name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    file["state"]["unikernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["config"]["name"] == name)
        .map(|u| u["config"]["args"].clone())
        .collect()
}

#[test]
fn a_duplicate_name_in_the_state_file_is_reported_and_set_aside() {
    let mut host = Host::new();
    host.start(&[]);
    // Saved in name order: "old" is listed first.
    for (name, arg) in [("old", "first"), ("web", "second")] {
        host.ok(&["create", name, &image(), "--", arg]);
        host.ok(&["destroy", name]);
    }
    host.signal_daemon(Signal::SIGTERM);
    // As a hand edit or a merge of two state files would leave it.
    let state = host.data.path().join("state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("\"old\"", "\"web\"")).unwrap();

    host.start(&[]);
    let names: Vec<_> = host.list().into_iter().map(|u| u["name"].clone()).collect();
    assert_eq!(names, ["web"]);
    let log = host.signal_daemon(Signal::SIGTERM);
    assert_eq!(saved_args(&state, "web"), [serde_json::json!(["first"])]);
    let aside: Vec<_> = std::fs::read_dir(host.data.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("state.json.duplicates-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        saved_args(&aside[0], "web"),
        [serde_json::json!(["second"])]
    );
    assert!(log.contains("more than one unikernel named web"), "{log}");
    assert!(log.contains(&aside[0].display().to_string()), "{log}");
}

#[test]
fn stopped_and_exited_unikernels_survive_a_daemon_restart() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&[
        "create",
        "done",
        &image(),
        "--restart",
        "never",
        "--",
        "exit=3",
    ]);
    host.ok(&["create", "halted", &image(), "--", "sleep-forever"]);
    host.ok(&["destroy", "halted"]);
    eventually("done exits", || host.state_of("done") == "exited");
    host.signal_daemon(Signal::SIGTERM);
    host.start(&[]);
    assert_eq!(host.state_of("done"), "exited");
    assert_eq!(host.state_of("halted"), "stopped");
    let done = host
        .list()
        .into_iter()
        .find(|u| u["name"] == "done")
        .unwrap();
    assert_eq!(done["exit_code"], 3);
}

#[test]
fn sigterm_with_stop_on_exit_stops_every_unikernel() {
    let mut host = Host::new();
    host.start(&["--stop-on-exit"]);
    host.ok(&["create", "a", &image(), "--", "sleep-forever"]);
    host.ok(&["create", "b", &image(), "--", "sleep-forever"]);
    let pids: Vec<i32> = host
        .list()
        .iter()
        .map(|u| u["pid"].as_i64().unwrap() as i32)
        .collect();
    host.signal_daemon(Signal::SIGTERM);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
    assert!(!host.socket().exists(), "the socket was left behind");
}

#[test]
fn a_cli_command_goes_through_fulmar_proxy_over_a_pipe() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    let reply = host.with_proxy_client(async |client| {
        client
            .call(fulmar::api::protocol::Request::List)
            .await
            .unwrap()
    });
    let fulmar::api::protocol::Reply::Unikernels { unikernels } = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(unikernels[0].config.name.as_str(), "web");
}

#[test]
fn a_user_outside_the_group_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let mut host = Host::new();
    host.start(&["--group", "0"]);
    // Let the stranger reach the socket; the daemon must still refuse it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host.runtime.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(host.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = host.command_as(65534, &["list"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 65534 gid 65534 may not use this fulmar daemon"),
        "{err}"
    );
    host.ok(&["list"]);
}

use std::process::{Command, Stdio};

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // A zombie has ended; it only waits to be reaped.
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_killed_daemon_re_adopts_its_unikernels() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&[
        "create",
        "web",
        &image(),
        "--restart",
        "never",
        "--",
        "print=before",
        "sleep=1500",
        "print=after",
        "exit=7",
    ]);
    host.ok(&["create", "db", &image(), "--", "sleep-forever"]);
    eventually("web's first line", || {
        host.ok(&["console", "web"]).contains("before\n")
    });
    let (web, db) = (host.pid_of("web"), host.pid_of("db"));
    host.signal_daemon(Signal::SIGKILL);
    assert!(
        alive(web) && alive(db),
        "the unikernels died with the daemon"
    );
    host.start(&[]);
    assert_eq!(host.pid_of("db"), db, "db was not re-adopted");
    assert_eq!(host.state_of("db"), "running");
    // web's console continues, and its end is recorded with its status.
    eventually("web exits", || host.state_of("web") == "exited");
    let web_row = host
        .list()
        .into_iter()
        .find(|u| u["name"] == "web")
        .unwrap();
    assert_eq!(web_row["exit_code"], 7);
    assert!(host.ok(&["console", "web"]).contains("after\n"));
    assert!(!alive(web));
    host.ok(&["destroy", "db"]);
    assert!(!alive(db));
}

#[test]
fn sigterm_leaves_unikernels_running_for_the_next_daemon() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    let pid = host.pid_of("web");
    host.signal_daemon(Signal::SIGTERM);
    assert!(alive(pid));
    host.start(&[]);
    assert_eq!(host.pid_of("web"), pid);
    assert_eq!(host.state_of("web"), "running");
}

#[test]
fn after_a_reboot_unikernels_start_again_by_priority() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&[
        "create",
        "low",
        &image(),
        "--priority",
        "1",
        "--",
        "sleep-forever",
    ]);
    host.ok(&[
        "create",
        "high",
        &image(),
        "--priority",
        "9",
        "--",
        "sleep-forever",
    ]);
    host.ok(&["create", "off", &image(), "--", "sleep-forever"]);
    host.ok(&["destroy", "off"]);
    let old: Vec<i32> = ["low", "high"].iter().map(|n| host.pid_of(n)).collect();
    // A reboot: the daemon and every process gone, the runtime directory empty.
    host.signal_daemon(Signal::SIGKILL);
    let monitors: Vec<i32> = std::fs::read_dir(host.runtime.path().join("unikernels"))
        .unwrap()
        .filter_map(|d| std::fs::read_to_string(d.ok()?.path().join("run.json")).ok())
        .filter_map(|run| {
            let pid =
                serde_json::from_str::<serde_json::Value>(&run).ok()?["monitor"]["pid"].as_i64()?;
            i32::try_from(pid).ok()
        })
        .collect();
    for pid in monitors.iter().chain(&old) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
    }
    eventually("the old processes are gone", || {
        old.iter().chain(&monitors).all(|p| !alive(*p))
    });
    std::fs::remove_dir_all(host.runtime.path().join("unikernels")).unwrap();
    host.start(&[]);
    for name in ["low", "high"] {
        assert_eq!(host.state_of(name), "running", "{name}");
        assert!(!old.contains(&host.pid_of(name)), "{name} kept a dead pid");
    }
    assert_eq!(host.state_of("off"), "stopped");
    // Started in priority order: high before low.
    assert!(host.pid_of("high") < host.pid_of("low"));
}

#[test]
fn console_follow_and_events_stream_live() {
    use fulmar::api::console::{ConsoleEvent, Since};
    use fulmar::api::event::Event;
    use fulmar::api::protocol::{Request, StreamItem};
    let mut host = Host::new();
    host.start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(host.socket())
            .await
            .unwrap();
        let (read, write) = stream.into_split();
        let client = fulmar::wire::client::Client::over(read, write)
            .await
            .unwrap();
        let mut events = client.stream(Request::Events).await.unwrap();
        // A round trip: the daemon has subscribed the stream before it answers.
        client.call(Request::List).await.unwrap();
        // A second client, the CLI, makes things happen.
        host.ok(&[
            "create",
            "talker",
            &image(),
            "--",
            "print=one",
            "sleep=300",
            "print=two",
            "sleep-forever",
        ]);
        let name = fulmar::api::label::Label::new("talker").unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match events.next().await.unwrap().unwrap() {
                StreamItem::Event {
                    event: Event::Created { name: n },
                } if n == name => seen.push("created"),
                StreamItem::Event {
                    event: Event::Started { name: n, .. },
                } if n == name => seen.push("started"),
                _ => {}
            }
        }
        assert_eq!(seen, ["created", "started"]);
        let mut console = client
            .stream(Request::Console {
                name: name.clone(),
                since: Since::Nothing,
                follow: true,
            })
            .await
            .unwrap();
        // "two" arrives live, after the subscription.
        loop {
            match console.next().await.unwrap().unwrap() {
                StreamItem::Console {
                    event: ConsoleEvent::Line(l),
                } if l.bytes == b"two" => break,
                StreamItem::Console { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    });
}

#[test]
fn console_output_to_a_pipe_is_passed_through_as_written() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "loud", &image(), "--", "escape", "exit=0"]);
    eventually("loud exits", || host.state_of("loud") == "exited");
    // Not a terminal: the bytes as the unikernel wrote them, for scripts.
    let raw = host.run(&["console", "loud"]).stdout;
    assert!(
        raw.windows(2).any(|w| w == b"\x1b]"),
        "the title escape was altered"
    );
    // Bytes that are not UTF-8 reach the client as they were written too.
    let odd = b"caf\xc3\xa9 \xff\xfe\x80 end";
    host.device_holding("disk", 1, odd);
    let image = Spec::new(Target::Hvt, &[("storage", DeviceKind::Block)]).path();
    let read = format!("block-read=storage:0:{}", odd.len());
    let image = image.to_str().unwrap();
    host.ok(&[
        "create",
        "odd",
        image,
        "--block",
        "storage:disk",
        "--",
        &read,
        "exit=0",
    ]);
    eventually("odd exits", || host.state_of("odd") == "exited");
    let raw = host.run(&["console", "odd"]).stdout;
    let line = [&b"block-read storage:0:"[..], odd].concat();
    assert!(
        raw.windows(line.len()).any(|w| w == line),
        "the bytes were altered: {raw:?}"
    );
}

#[test]
fn systemd_readiness_and_socket_activation() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let host = Host::new();
    // systemd's side: a notify socket, and the listening socket it passes as fd 3.
    let notify_path = host.runtime.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let socket = host.runtime.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    let mut command = host.command(&["daemon"]);
    command
        .env("NOTIFY_SOCKET", &notify_path)
        .env("LISTEN_FDS", "1")
        .env(
            "FULMAR_SOCKET",
            host.runtime.path().join("not-this-one.sock"),
        );
    // LISTEN_PID must be the daemon's own pid, known only in the child: the
    // test asks sh to exec the daemon with it (the daemon itself never uses a shell).
    let program = support::daemon::fulmar().display().to_string();
    let mut shell = Command::new("sh");
    shell
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" daemon", &program])
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only dup2, which is async-signal-safe, runs;
    // it puts the listening socket where socket activation expects it.
    unsafe {
        shell.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = shell.spawn().unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("no readiness notification");
    assert_eq!(&buf[..n], b"READY=1");
    // It answers on the socket it was given, and did not make its own.
    let out = host
        .command(&[
            "--no-start",
            "--socket",
            socket.to_str().unwrap(),
            "list",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!host.runtime.path().join("not-this-one.sock").exists());
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

#[test]
fn policy_and_stats_for_scripts() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&[
        "create",
        "web",
        &image(),
        "--mem",
        "64",
        "--cpu",
        "0",
        "--",
        "sleep-forever",
    ]);
    let policy: serde_json::Value = serde_json::from_str(&host.ok(&["policy", "--json"])).unwrap();
    assert!(
        policy["cpus"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(0))
    );
    assert!(policy["memory_mb"].as_u64().unwrap() > 64);
    assert!(policy["disk_mb"].as_u64().unwrap() > 0);
    assert!(policy["bridges"].is_array());
    assert_eq!(policy["used"]["memory_mb"], 64);
    assert_eq!(policy["used"]["cpus"]["0"], 1);
    let stats: serde_json::Value =
        serde_json::from_str(&host.ok(&["stats", "web", "--json"])).unwrap();
    assert_eq!(stats[0]["name"], "web");
    assert_eq!(stats[0]["pid"], host.pid_of("web"));
    assert!(stats[0]["rss_kb"].as_u64().unwrap() > 0);
    let all: serde_json::Value = serde_json::from_str(&host.ok(&["stats", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert!(host.ok(&["policy"]).starts_with("RESOURCE"));
}

#[test]
fn a_missing_image_keeps_unikernels_listed_and_saved() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    host.ok(&["create", "off", &image(), "--", "sleep-forever"]);
    host.ok(&["destroy", "off"]);
    let pid = host.pid_of("web");
    host.signal_daemon(Signal::SIGKILL);
    let images = host.data.path().join("images");
    std::fs::rename(&images, host.data.path().join("images.away")).unwrap();
    // Twice: the second start must still find them in the state it saved.
    for _ in 0..2 {
        host.start(&[]);
        assert_eq!(host.pid_of("web"), pid, "web was not re-adopted");
        assert_eq!(host.state_of("web"), "running");
        assert_eq!(host.state_of("off"), "stopped");
        host.signal_daemon(Signal::SIGTERM);
    }
    // With nothing left running, web is listed stopped and says why.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    eventually("web is gone", || !alive(pid));
    host.start(&[]);
    eventually("web's end is booked", || host.state_of("web") != "running");
    host.signal_daemon(Signal::SIGTERM);
    host.start(&[]);
    assert_eq!(host.state_of("off"), "stopped");
    assert_ne!(host.state_of("web"), "");
    assert!(host.ok(&["console", "web"]).contains("no stored image"));
}

#[test]
fn a_change_the_state_cannot_record_is_not_acknowledged() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let mut host = Host::new();
    let data = host.data.path().to_owned();
    nix::mount::mount(
        Some("tmpfs"),
        &data,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=20m,mode=0700"),
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(data.clone());
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    // Fill the data disk: writing more than it holds fails once it is full.
    let _ = std::fs::write(data.join("filler"), vec![1u8; 21 << 20]);
    let err = host.fails(&["destroy", "web"]);
    assert!(err.contains("not recorded"), "{err}");
    let err = host.fails(&["remove", "web"]);
    assert!(err.contains("not recorded"), "{err}");
    host.signal_daemon(Signal::SIGKILL);
}

#[test]
fn a_new_daemon_removes_unfinished_images_a_killed_one_left() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["create", "web", &image(), "--", "sleep-forever"]);
    host.signal_daemon(Signal::SIGKILL);
    let images = host.data.path().join("images");
    for leftover in [".image-a1B2c3", ".upload-d4E5f6"] {
        std::fs::write(images.join(leftover), b"half an image").unwrap();
    }
    host.start(&[]);
    // The socket takes connections before start-up is over; an answer
    // comes only once it is, with the leftovers gone.
    assert_eq!(host.state_of("web"), "running");
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.retain(|n| n.starts_with('.'));
    assert_eq!(names, Vec::<String>::new());
}

/// Makes every stored image look sent an hour ago, past the grace in which
/// an image nothing uses yet is kept for the create that will name it.
fn age_stored_images(host: &Host) {
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in std::fs::read_dir(host.data.path().join("images")).unwrap() {
        let file = std::fs::File::options()
            .write(true)
            .open(entry.unwrap().path())
            .unwrap();
        file.set_modified(hour_ago).unwrap();
    }
}

#[test]
fn remove_deletes_the_image_nothing_else_uses_and_says_how_much() {
    let mut host = Host::new();
    host.start(&[]);
    let shared = image();
    let own = Spec::new(Target::Spt, &[]).path().display().to_string();
    let late = Spec::new(Target::Hvt, &[("storage", DeviceKind::Block)]);
    let late = late.path().display().to_string();
    host.ok(&["block", "create", "disk", "1"]);
    let create = |name: &str, image: &str| {
        let mut args = vec!["create", name, image, "--restart", "never"];
        if image == late {
            args.extend(["--block", "storage:disk"]);
        }
        args.extend(["--", "sleep-forever"]);
        host.ok(&args);
        host.ok(&["destroy", name]);
    };
    for (name, image) in [
        ("web", &shared),
        ("db", &shared),
        ("api", &own),
        ("tmp", &late),
    ] {
        create(name, image);
    }
    let digest = |name: &str| {
        let row = host.list().into_iter().find(|u| u["name"] == name).unwrap();
        host.data
            .path()
            .join("images")
            .join(row["digest"].as_str().unwrap())
    };
    let (shared_file, own_file, late_file) = (digest("web"), digest("api"), digest("tmp"));
    age_stored_images(&host);
    assert_eq!(
        host.ok(&["remove", "web"]),
        "web: removed; its image is kept for db\n"
    );
    assert!(shared_file.exists());
    let size = std::fs::metadata(&shared_file).unwrap().len();
    let out = host.ok(&["remove", "db"]);
    assert_eq!(
        out,
        format!(
            "db: removed; {} of unused images deleted\n",
            fulmar::ui::format::bytes(size)
        )
    );
    assert!(!shared_file.exists());
    assert!(own_file.exists(), "an image still in use was deleted");
    // Sent again just now: kept for a create that may be about to name it.
    create("again", &late);
    host.ok(&["remove", "again"]);
    host.ok(&["remove", "tmp"]);
    assert!(late_file.exists(), "an image sent a moment ago was deleted");
    host.ok(&["restart", "api"]);
    assert_eq!(host.state_of("api"), "running");
}
