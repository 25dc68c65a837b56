//! Scripted daemon state for the UI's tests: unikernels in every state, and
//! an app driven by updates and keys and drawn on a `TestBackend`.

use crate::api::block::BlockDeviceInfo;
use crate::api::console::{ConsoleEvent, ConsoleLine, LineSource};
use crate::api::image::{Device, DeviceKind, Target};
use crate::api::label::Label;
use crate::api::mac::Mac;
use crate::api::policy::{Policy, PolicyReport, Usage};
use crate::api::unikernel::{
    BlockConfig, ExitRecord, ExitStatus, NetConfig, RunState, TapInfo, UnikernelConfig,
    UnikernelInfo,
};
use crate::ui::app::App;
use crate::ui::config::Config;
use crate::ui::keymap::Key;
use crate::ui::message::{Command, Update};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// The wall clock every test reads: 2027-01-15 08:00 UTC.
pub const NOW_MS: u64 = 1_800_000_000_000;

pub fn label(name: &str) -> Label {
    Label::new(name).unwrap()
}

/// A configuration with the image's two devices bound: `service` to the
/// bridge br0 and `storage` to block device `disk`.
pub fn config_with_devices(name: &str, disk: &str) -> UnikernelConfig {
    let mut config = UnikernelConfig::new(label(name));
    config.nets = vec![NetConfig {
        interface: "service".into(),
        bridge: "br0".into(),
        mac: None,
    }];
    config.blocks = vec![BlockConfig {
        device: "storage".into(),
        block: label(disk),
        sector_size: None,
    }];
    config
}

/// A unikernel with one network and one block device, in `state`.
pub fn unikernel(name: &str, state: RunState) -> UnikernelInfo {
    let mut config = config_with_devices(name, &format!("{name}-disk"));
    config.memory_mb = 256;
    config.cpu = 1;
    config.args = vec!["--ipv4=10.0.0.2/24".into()];
    let running = matches!(state, RunState::Running { .. });
    let taps = if running {
        vec![TapInfo {
            interface: "service".into(),
            tap: format!("tap-{name}"),
            bridge: "br0".into(),
            mac: Mac::derived("service", name),
        }]
    } else {
        Vec::new()
    };
    UnikernelInfo {
        target: Target::Hvt,
        devices: vec![
            Device {
                name: "service".into(),
                kind: DeviceKind::Net,
            },
            Device {
                name: "storage".into(),
                kind: DeviceKind::Block,
            },
        ],
        digest: "c67a8f7bc6061f6b2a8d1e3b9a1f4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d".into(),
        state,
        taps,
        argv: vec!["solo5-hvt".into(), "--mem=256".into()],
        restarts: 0,
        exits: Vec::new(),
        config,
    }
}

pub fn running(name: &str, for_ms: u64) -> UnikernelInfo {
    unikernel(
        name,
        RunState::Running {
            pid: 4242,
            since_ms: NOW_MS - for_ms,
        },
    )
}

pub fn exited(name: &str, status: ExitStatus) -> UnikernelInfo {
    let exit = ExitRecord {
        status,
        at_ms: NOW_MS - 60_000,
        ran_ms: 5_000,
    };
    let mut info = unikernel(name, RunState::Exited { exit: exit.clone() });
    info.exits = vec![exit];
    info
}

pub fn crash_loop(name: &str) -> UnikernelInfo {
    let mut info = unikernel(
        name,
        RunState::CrashLoop {
            at_ms: NOW_MS + 42_000,
            failures: 12,
        },
    );
    info.restarts = 12;
    info
}

/// One of each state.
pub fn every_state() -> Vec<UnikernelInfo> {
    vec![
        running("web", 3 * 3_600_000 + 5 * 60_000),
        exited("batch", ExitStatus::Code(0)),
        exited("broken", ExitStatus::Signal(9)),
        crash_loop("flaky"),
        unikernel(
            "waiting",
            RunState::Restarting {
                at_ms: NOW_MS + 4_000,
            },
        ),
        unikernel("parked", RunState::Stopped),
    ]
}

pub fn policy() -> PolicyReport {
    let mut used = Usage::default();
    used.cpus.insert(1, 2);
    used.memory_mb = 768;
    used.disk_mb = 2048;
    used.bridges.insert("br0".into(), 2);
    PolicyReport {
        policy: Policy {
            cpus: vec![0, 1, 2, 3],
            memory_mb: 16_384,
            disk_mb: 102_400,
            bridges: vec!["br0".into(), "br1".into()],
        },
        used,
    }
}

pub fn blocks() -> Vec<BlockDeviceInfo> {
    vec![
        BlockDeviceInfo {
            name: label("web-disk"),
            size_mb: 64,
            attached_to: Some(label("web")),
        },
        BlockDeviceInfo {
            name: label("spare"),
            size_mb: 1024,
            attached_to: None,
        },
    ]
}

pub fn console_line(seq: u64, text: &str) -> Update {
    console_bytes("web", seq, text.as_bytes())
}

pub fn console_bytes(name: &str, seq: u64, bytes: &[u8]) -> Update {
    Update::Console {
        name: label(name),
        event: line(seq, NOW_MS - 10_000 + seq * 10, bytes),
    }
}

/// A whole line the unikernel wrote.
pub fn line(seq: u64, at_ms: u64, bytes: impl AsRef<[u8]>) -> ConsoleEvent {
    piece(seq, at_ms, bytes, false)
}

/// A piece of the unikernel's output; `continued` when it goes on the last one's line.
pub fn piece(seq: u64, at_ms: u64, bytes: impl AsRef<[u8]>, continued: bool) -> ConsoleEvent {
    ConsoleEvent::Line(ConsoleLine {
        seq,
        at_ms,
        bytes: bytes.as_ref().to_vec(),
        continued,
        source: LineSource::Unikernel,
    })
}

/// A line fulmar itself wrote into `name`'s console ("exited 2").
pub fn fulmar_line(name: &str, seq: u64, text: &str) -> Update {
    let mut update = console_bytes(name, seq, text.as_bytes());
    if let Update::Console {
        event: ConsoleEvent::Line(line),
        ..
    } = &mut update
    {
        line.source = LineSource::Fulmar;
    }
    update
}

/// The daemon skipped `count` of `name`'s lines for a slow client.
pub fn dropped(name: &str, count: u64) -> Update {
    Update::Console {
        name: label(name),
        event: ConsoleEvent::Dropped { count },
    }
}

/// An app on a `TestBackend`, driven as the daemon and the operator would.
pub struct Harness {
    pub app: App,
    pub terminal: Terminal<TestBackend>,
    /// Every command the app has sent, in order.
    pub sent: Vec<Command>,
}

impl Harness {
    pub fn new(width: u16, height: u16) -> Harness {
        Harness::with(Config::default(), false, width, height)
    }

    pub fn with(config: Config, read_only: bool, width: u16, height: u16) -> Harness {
        let mut harness = Harness {
            app: App::new(config, read_only),
            terminal: Terminal::new(TestBackend::new(width, height)).unwrap(),
            sent: Vec::new(),
        };
        harness.update(Update::Connected {
            daemon: "fulmar 0.1.0".into(),
        });
        harness
    }

    /// A connected app that knows `unikernels`, the policy and the blocks.
    pub fn showing(unikernels: Vec<UnikernelInfo>, width: u16, height: u16) -> Harness {
        let mut harness = Harness::new(width, height);
        harness.update(Update::Unikernels(unikernels));
        harness.update(Update::Policy(policy()));
        harness.update(Update::Blocks(blocks()));
        harness
    }

    pub fn update(&mut self, update: Update) {
        let commands = self.app.on_update(update, NOW_MS);
        self.sent.extend(commands);
    }

    /// Presses keys written as the config file writes them: `"x"`, `"enter"`.
    pub fn press(&mut self, keys: &[&str]) {
        for key in keys {
            let key: Key = key.parse().unwrap();
            let commands = self.app.on_key(key.event(), NOW_MS);
            self.sent.extend(commands);
        }
    }

    /// Types text into a prompt, one character at a time.
    pub fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            let event = crossterm::event::KeyEvent::new(
                crossterm::event::KeyCode::Char(c),
                crossterm::event::KeyModifiers::NONE,
            );
            let commands = self.app.on_key(event, NOW_MS);
            self.sent.extend(commands);
        }
    }

    /// Draws a frame and returns the screen as text, for snapshots.
    pub fn screen(&mut self) -> String {
        let app = &self.app;
        self.terminal.draw(|frame| app.draw(frame, NOW_MS)).unwrap();
        self.terminal.backend().to_string()
    }

    pub fn resize(&mut self, width: u16, height: u16) {
        self.terminal.backend_mut().resize(width, height);
        self.app.on_resize();
    }
}
