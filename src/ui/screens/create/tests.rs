//! The create and edit form: every launch rule it shows, each passing and
//! failing through the form's own state; snapshots of its states at 80x24
//! and 200x60; and what it sends the daemon.

use super::form::{Form, Image, RestartKind, Row};
use crate::api::image::{Device, DeviceKind, ImageInfo, InspectReport, Target, TenderReport};
use crate::api::protocol::{ApiError, ErrorKind};
use crate::api::unikernel::{RestartPolicy, UnikernelConfig};
use crate::api::validate::Problem;
use crate::ui::fixtures::*;
use crate::ui::message::{Command, FormReply, Update};
use crate::ui::model::Model;

const PATH: &str = "/srv/images/web.hvt";
const DIGEST: &str = "5e1f0c2d3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

fn device(name: &str, kind: DeviceKind) -> Device {
    Device {
        name: name.into(),
        kind,
    }
}

/// What the daemon says of an image with `devices`, run by a tender it found.
fn report_with(target: Target, devices: Vec<Device>) -> InspectReport {
    InspectReport {
        image: ImageInfo {
            target,
            abi_version: 2,
            manifest_version: 1,
            devices,
            sha256: DIGEST.into(),
            compressed: false,
            size: 1_572_864,
        },
        tender: TenderReport::Found {
            path: format!("/usr/local/bin/solo5-{target}"),
            abi_version: 2,
        },
    }
}

/// An hvt image with a network device `service` and a block device `storage`.
fn report() -> InspectReport {
    report_with(
        Target::Hvt,
        vec![
            device("service", DeviceKind::Net),
            device("storage", DeviceKind::Block),
        ],
    )
}

fn model() -> Model {
    let mut model = Model::default();
    model.apply(Update::Unikernels(every_state()), NOW_MS);
    model.apply(Update::Policy(policy()), NOW_MS);
    model.apply(Update::Blocks(blocks()), NOW_MS);
    model
}

/// A form that passes every rule: `new`, on br0 and the free block device.
fn good() -> Form {
    with_image(report())
}

fn with_image(report: InspectReport) -> Form {
    let mut form = Form::create();
    form.image_path.set(PATH);
    form.set_image(PATH.into(), report);
    form.name.set("new");
    for row in &mut form.devices {
        row.choice = Some(match row.device.kind {
            DeviceKind::Net => "br0".into(),
            DeviceKind::Block => "spare".into(),
        });
    }
    form
}

/// The reasons the form gives beside `row`.
fn reasons(form: &Form, row: Row) -> Vec<String> {
    form.check(&model())
        .reasons_of(row)
        .map(String::from)
        .collect()
}

/// `change` makes `row` fail with a reason containing `says`; `good()` passes.
fn fails(row: Row, says: &str, change: impl FnOnce(&mut Form)) {
    let ok = good().check(&model());
    assert!(ok.ready(), "the good form: {:?}", ok.reasons);
    let mut form = good();
    change(&mut form);
    let check = form.check(&model());
    assert!(!check.ready(), "{row:?} should fail");
    let found: Vec<&str> = check.reasons_of(row).collect();
    assert!(
        found.iter().any(|r| r.contains(says)),
        "{row:?}: wanted {says:?}, got {:?}",
        check.reasons
    );
}

/// `change` leaves the form ready to submit.
fn passes(change: impl FnOnce(&mut Form)) -> UnikernelConfig {
    let mut form = good();
    change(&mut form);
    let check = form.check(&model());
    assert!(check.ready(), "{:?} {:?}", check.reasons, check.waiting);
    check.config.unwrap()
}

#[test]
fn the_good_form_makes_the_configuration_it_shows() {
    let config = passes(|_| {});
    assert_eq!(config, config_with_devices("new", "spare"));
}

#[test]
fn rule_name_is_a_valid_label() {
    passes(|f| f.name.set("web-2.example"));
    fails(Row::Name, "contains '/' at position 2", |f| {
        f.name.set("a/b")
    });
    fails(Row::Name, "the name is empty", |f| f.name.set(""));
}

#[test]
fn rule_name_is_free() {
    passes(|f| f.name.set("fresh"));
    fails(Row::Name, "a unikernel named web exists already", |f| {
        f.name.set("web")
    });
}

#[test]
fn rule_image_is_a_checked_solo5_image() {
    passes(|f| f.image_path.set(PATH));
    fails(Row::Image, "not a Solo5 image", |f| {
        f.image = Image::Failed {
            path: PATH.into(),
            why: "not a Solo5 image: no .note.solo5.abi".into(),
        }
    });
    fails(Row::Image, "press enter to check this path", |f| {
        f.image_path.set("/srv/images/other.hvt")
    });
    let mut form = good();
    form.image = Image::Inspecting { path: PATH.into() };
    let check = form.check(&model());
    assert!(!check.ready());
    assert!(check.waiting.unwrap().contains("checking"));
}

#[test]
fn rule_a_tender_runs_the_image() {
    let missing = |f: &mut Form| {
        let mut r = report();
        r.tender = TenderReport::Missing {
            error: "no tender for hvt ABI 2: looked for solo5-hvt.2".into(),
        };
        f.set_image(PATH.into(), r);
    };
    passes(|f| f.set_image(PATH.into(), report()));
    fails(Row::Image, "no tender for hvt ABI 2", missing);
}

#[test]
fn rule_memory_is_a_number_of_at_least_one_mb() {
    assert_eq!(passes(|f| f.memory.set("64")).memory_mb, 64);
    fails(
        Row::Memory,
        "write the memory as a whole number of MB",
        |f| f.memory.set("lots"),
    );
    fails(Row::Memory, "memory must be at least 1 MB", |f| {
        f.memory.set("0")
    });
}

#[test]
fn rule_memory_fits_hvt_and_what_is_free() {
    passes(|f| f.memory.set("4096"));
    fails(Row::Memory, "more than solo5-hvt accepts", |f| {
        f.memory.set("4097")
    });
    let spt = || report_with(Target::Spt, vec![]);
    let free = 16_384 - 768;
    let mut form = with_image(spt());
    form.memory.set(&free.to_string());
    assert!(form.check(&model()).ready());
    form.memory.set(&(free + 1).to_string());
    assert_eq!(
        reasons(&form, Row::Memory),
        [format!(
            "{} MB asked but only {free} MB of 16384 MB are free: lower the memory or stop another unikernel",
            free + 1
        )]
    );
}

#[test]
fn rule_cpu_is_online() {
    assert_eq!(passes(|f| f.cpu.set("3")).cpu, 3);
    fails(Row::Cpu, "CPU 7 is not online here: use one of 0-3", |f| {
        f.cpu.set("7")
    });
    fails(Row::Cpu, "write a CPU number", |f| f.cpu.set("first"));
}

#[test]
fn rule_arguments_split_like_a_shell() {
    let config = passes(|f| f.args.set(r#"--ipv4=10.0.0.2/24 'hello world' a\ b"#));
    assert_eq!(config.args, ["--ipv4=10.0.0.2/24", "hello world", "a b"]);
    fails(Row::Args, "a single quote is not closed", |f| {
        f.args.set("print='oops")
    });
}

#[test]
fn rule_restart_policy_is_on_failure_unless_chosen() {
    let config = passes(|f| {
        f.restart = RestartKind::OnCodes;
        f.codes.set("signal, 1, 2-3");
    });
    assert_eq!(config.restart.to_string(), "on-failure:signal,1-3");
    assert_eq!(passes(|_| {}).restart, RestartPolicy::OnFailure);
    assert_eq!(
        passes(|f| f.restart = RestartKind::Always).restart,
        RestartPolicy::Always
    );
    fails(Row::Codes, "\"x\" is not an exit code", |f| {
        f.restart = RestartKind::OnCodes;
        f.codes.set("2,x");
    });
    fails(Row::Codes, "names no exit code", |f| {
        f.restart = RestartKind::OnCodes
    });
}

#[test]
fn rule_priority_is_a_whole_number() {
    assert_eq!(passes(|f| f.priority.set("-10")).startup_priority, -10);
    fails(Row::Priority, "write a whole number", |f| {
        f.priority.set("high")
    });
}

#[test]
fn rule_every_manifest_device_is_bound() {
    passes(|f| f.devices[0].choice = Some("br1".into()));
    fails(Row::Device(0), "not bound: choose a bridge", |f| {
        f.devices[0].choice = None
    });
    fails(Row::Device(1), "not bound: choose a block device", |f| {
        f.devices[1].choice = None
    });
}

#[test]
fn rule_bridges_exist() {
    passes(|f| f.devices[0].choice = Some("br0".into()));
    fails(
        Row::Device(0),
        "bridge br9 (for service) does not exist: create it or use one of: br0, br1",
        |f| f.devices[0].choice = Some("br9".into()),
    );
}

#[test]
fn rule_block_devices_exist_and_are_free() {
    passes(|f| f.devices[1].choice = Some("spare".into()));
    fails(
        Row::Device(1),
        "block device ghost (for storage) does not exist",
        |f| f.devices[1].choice = Some("ghost".into()),
    );
    fails(Row::Device(1), "is attached to web", |f| {
        f.devices[1].choice = Some("web-disk".into())
    });
}

#[test]
fn rule_a_block_device_serves_one_device() {
    let two = || {
        with_image(report_with(
            Target::Hvt,
            vec![
                device("data", DeviceKind::Block),
                device("logs", DeviceKind::Block),
            ],
        ))
    };
    let mut form = two();
    form.devices[1].choice = None;
    assert_eq!(
        reasons(&form, Row::Device(1)),
        ["not bound: choose a block device"]
    );
    assert_eq!(reasons(&form, Row::Device(0)), Vec::<String>::new());
    let form = two();
    assert_eq!(
        reasons(&form, Row::Device(1)),
        ["block device spare is bound to both data and logs: give each device its own"]
    );
}

#[test]
fn rule_sector_sizes_are_powers_of_two_that_divide_the_device() {
    assert_eq!(
        passes(|f| f.devices[1].sector.set("4096")).blocks[0].sector_size,
        Some(4096)
    );
    fails(
        Row::Sector(1),
        "is not a power of two of at least 512",
        |f| f.devices[1].sector.set("1000"),
    );
    fails(
        Row::Sector(1),
        "is not a whole number of 2147483648-byte sectors",
        |f| f.devices[1].sector.set("2147483648"),
    );
    fails(Row::Sector(1), "write the sector size in bytes", |f| {
        f.devices[1].sector.set("big")
    });
}

#[test]
fn nothing_is_checked_before_the_host_is_known() {
    let mut model = Model::default();
    model.apply(Update::Unikernels(every_state()), NOW_MS);
    let check = good().check(&model);
    assert!(!check.ready());
    assert!(check.waiting.unwrap().contains("policy"));
    assert!(
        Form::create()
            .check(&self::model())
            .waiting
            .unwrap()
            .contains("choose an image")
    );
}

#[test]
fn editing_counts_the_unikernels_own_name_memory_and_block_as_free() {
    let mut web = running("web", 60_000);
    web.target = Target::Spt;
    let mut form = Form::edit(&web);
    let check = form.check(&model());
    assert!(check.ready(), "{:?}", check.reasons);
    assert_eq!(check.config.unwrap(), web.config);
    // 768 MB are used, 256 of them by web itself.
    let most = 16_384 - 768 + 256;
    form.memory.set(&most.to_string());
    assert!(form.check(&model()).ready());
    form.memory.set(&(most + 1).to_string());
    assert!(reasons(&form, Row::Memory)[0].contains("MB are free"));
}

#[test]
fn the_daemons_refusal_stands_beside_the_fields_it_names() {
    let mut form = good();
    let mut refusal = ApiError::new(ErrorKind::Invalid, "cannot create new");
    refusal.problems = vec![Problem::NameTaken(label("new"))];
    form.refused = Some(refusal);
    assert_eq!(
        reasons(&form, Row::Name),
        ["a unikernel named new exists already: pick another name or remove it"]
    );
    form.refused = Some(ApiError::new(ErrorKind::Host, "cannot create the tap"));
    assert_eq!(reasons(&form, Row::Submit), ["cannot create the tap"]);
}

// The screen, driven through the app as the operator would.

fn choose_image(h: &mut Harness, report: InspectReport) {
    h.type_text(PATH);
    h.press(&["enter"]);
    h.update(Update::Form(FormReply::Image {
        path: PATH.into(),
        outcome: Ok(report),
    }));
}

/// Replaces the focused field's text.
fn retype(h: &mut Harness, text: &str) {
    h.press(&["home", "ctrl-k"]);
    h.type_text(text);
}

/// The form filled in and ready, the focus on its button.
fn ready(h: &mut Harness) {
    h.press(&["n"]);
    choose_image(h, report());
    h.type_text("new");
    // memory, cpu, arguments, restart, priority, then the devices
    h.press(&["tab", "tab", "tab"]);
    h.type_text("--ipv4=10.0.0.9/24");
    h.press(&["tab", "tab", "tab", "right", "tab", "right", "tab", "tab"]);
}

fn at_both_sizes(name: &str, setup: impl Fn(&mut Harness)) {
    for (width, height) in [(80, 24), (200, 60)] {
        let mut harness = Harness::showing(every_state(), width, height);
        setup(&mut harness);
        insta::assert_snapshot!(format!("{name}_{width}x{height}"), harness.screen());
    }
}

#[test]
fn snapshot_empty() {
    at_both_sizes("create_empty", |h| h.press(&["n"]));
}

#[test]
fn snapshot_image_being_checked() {
    at_both_sizes("create_checking", |h| {
        h.press(&["n"]);
        h.type_text(PATH);
        h.press(&["enter"]);
    });
}

#[test]
fn snapshot_image_chosen_lists_its_devices() {
    at_both_sizes("create_image_chosen", |h| {
        h.press(&["n"]);
        choose_image(h, report());
    });
}

#[test]
fn snapshot_ready() {
    at_both_sizes("create_ready", ready);
}

#[test]
fn snapshot_errors_in_the_settings() {
    at_both_sizes("create_errors_settings", |h| {
        h.press(&["n"]);
        choose_image(h, report());
        h.type_text("web");
        h.press(&["tab"]);
        retype(h, "lots");
        h.press(&["tab"]);
        retype(h, "7");
        h.press(&["tab"]);
        h.type_text("print='oops");
        h.press(&["tab", "right", "right", "tab"]);
        h.type_text("1,63");
    });
}

#[test]
fn snapshot_errors_in_the_devices() {
    at_both_sizes("create_errors_devices", |h| {
        h.press(&["n"]);
        choose_image(h, report());
        h.type_text("new");
        h.press(&["tab", "tab", "tab", "tab", "tab", "tab", "tab", "right"]);
        h.press(&["tab"]);
        h.type_text("1000");
    });
}

#[test]
fn snapshot_memory_beyond_what_is_free() {
    at_both_sizes("create_error_memory", |h| {
        h.press(&["n"]);
        choose_image(h, report_with(Target::Spt, vec![]));
        h.type_text("big");
        h.press(&["tab"]);
        retype(h, "20000");
    });
}

#[test]
fn snapshot_no_tender() {
    at_both_sizes("create_error_tender", |h| {
        h.press(&["n"]);
        let mut r = report();
        r.tender = TenderReport::Missing {
            error: "no tender for hvt ABI 2: looked for solo5-hvt.2 and solo5-hvt in /var/lib/fulmar, /usr/bin; install Solo5's solo5-hvt or put it in the data directory".into(),
        };
        choose_image(h, r);
    });
}

#[test]
fn snapshot_not_an_image() {
    at_both_sizes("create_error_image", |h| {
        h.press(&["n"]);
        h.type_text(PATH);
        h.press(&["enter"]);
        h.update(Update::Form(FormReply::Image {
            path: PATH.into(),
            outcome: Err("the daemon refused the image: not an ELF file".into()),
        }));
    });
}

#[test]
fn snapshot_refused_by_the_daemon() {
    at_both_sizes("create_refused", |h| {
        ready(h);
        h.press(&["enter"]);
        let mut refusal = ApiError::new(ErrorKind::Invalid, "cannot create new");
        refusal.problems = vec![Problem::BlockAttached {
            device: "storage".into(),
            block: label("spare"),
            holder: label("batch"),
        }];
        h.update(Update::Form(FormReply::Submitted {
            name: label("new"),
            outcome: Err(refusal),
        }));
    });
}

#[test]
fn snapshot_completion_matches() {
    at_both_sizes("create_completion", |h| {
        h.press(&["n"]);
        h.type_text("/srv/images/w");
        h.press(&["tab"]);
        h.update(Update::Form(FormReply::Completions {
            typed: "/srv/images/w".into(),
            outcome: Ok(vec![
                "/srv/images/web.hvt".into(),
                "/srv/images/web.spt".into(),
                "/srv/images/webroot/".into(),
            ]),
        }));
    });
}

#[test]
fn snapshot_edit() {
    at_both_sizes("edit", |h| {
        h.press(&["G", "enter", "e"]);
    });
}

#[test]
fn submit_is_refused_while_a_device_is_unbound() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["n"]);
    choose_image(&mut h, report());
    h.type_text("new");
    // Bind the block device only, then press the button.
    h.press(&["tab", "tab", "tab", "tab", "tab", "tab", "tab", "right"]);
    h.press(&["tab", "tab", "enter"]);
    assert!(
        !h.sent.iter().any(|c| matches!(c, Command::Create { .. })),
        "{:?}",
        h.sent
    );
    let screen = h.screen();
    assert!(screen.contains("not yet: 1 thing to fix"), "{screen}");
    assert!(screen.contains("✗ not bound: choose a bridge"), "{screen}");
    assert!(
        screen.contains("▸ service"),
        "the focus went to the device: {screen}"
    );
}

#[test]
fn create_is_sent_when_ready_and_the_console_opens_on_success() {
    let mut h = Harness::showing(every_state(), 80, 24);
    ready(&mut h);
    assert!(h.screen().contains("[ Create new ]"));
    h.press(&["enter"]);
    let mut config = config_with_devices("new", "spare");
    config.args = vec!["--ipv4=10.0.0.9/24".into()];
    assert_eq!(
        h.sent,
        [
            Command::InspectImage(PATH.into()),
            Command::Create {
                config: Box::new(config),
                image: DIGEST.into()
            }
        ]
    );
    assert!(h.screen().contains("sent; waiting for the daemon"));
    h.press(&["enter"]);
    assert_eq!(h.sent.len(), 2, "one request at a time");
    h.update(Update::Form(FormReply::Submitted {
        name: label("new"),
        outcome: Ok(()),
    }));
    assert_eq!(h.sent.last(), Some(&Command::Watch(label("new"))));
    let screen = h.screen();
    assert!(screen.contains("console of new"), "{screen}");
    assert!(screen.contains("new created"), "{screen}");
    h.press(&["esc"]);
    assert!(
        h.screen().contains("unikernels ("),
        "the form is gone, the list is back"
    );
}

#[test]
fn tab_completes_the_image_path_then_moves_on() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["n"]);
    h.type_text("/srv/im");
    h.press(&["tab"]);
    assert_eq!(h.sent, [Command::CompletePath("/srv/im".into())]);
    h.update(Update::Form(FormReply::Completions {
        typed: "/srv/im".into(),
        outcome: Ok(vec!["/srv/images/".into()]),
    }));
    assert!(h.screen().contains("/srv/images/"));
    h.press(&["tab"]);
    assert_eq!(h.sent[1], Command::CompletePath("/srv/images/".into()));
    h.update(Update::Form(FormReply::Completions {
        typed: "/srv/images/".into(),
        outcome: Ok(vec!["/srv/images/web.hvt".into()]),
    }));
    assert_eq!(
        h.sent[2],
        Command::InspectImage(PATH.into()),
        "a whole file name is the image"
    );
    h.press(&["tab"]);
    assert_eq!(h.sent.len(), 3, "nothing more to complete: the focus moves");
    h.type_text("x");
    assert!(h.screen().contains("▸ Name"));
}

#[test]
fn answers_for_another_path_are_ignored() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["n"]);
    h.type_text(PATH);
    h.press(&["enter"]);
    h.update(Update::Form(FormReply::Image {
        path: "/old/choice.hvt".into(),
        outcome: Ok(report()),
    }));
    assert!(h.screen().contains("checking…"));
}

#[test]
fn typed_characters_are_text_not_keys() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["n"]);
    h.press(&["tab"]);
    h.type_text("q?:/b");
    assert!(!h.app.quitting());
    let screen = h.screen();
    assert!(screen.contains("q?:/b"), "{screen}");
    assert!(screen.contains("create a unikernel"), "{screen}");
}

#[test]
fn leaving_asks_only_when_something_was_typed() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["n", "esc"]);
    assert!(h.screen().contains("unikernels ("));
    h.press(&["n"]);
    h.type_text("/x");
    h.press(&["esc"]);
    assert!(h.screen().contains("Leave the form?"));
    h.press(&["enter"]);
    assert!(
        h.screen().contains("create a unikernel"),
        "Cancel is the default"
    );
    h.press(&["esc", "right", "enter"]);
    assert!(h.screen().contains("unikernels ("));
}

#[test]
fn editing_restarts_with_the_changed_settings_after_asking() {
    let mut h = Harness::showing(vec![running("web", 60_000)], 80, 24);
    h.press(&["enter", "e"]);
    retype(&mut h, "384");
    h.press(&["tab", "tab"]);
    retype(&mut h, "--ipv4=10.0.0.3/24 'hello world'");
    h.press(&["backtab", "backtab", "backtab"]);
    h.press(&["enter"]);
    let screen = h.screen();
    assert!(
        screen.contains("Restart web with these settings?"),
        "{screen}"
    );
    assert!(screen.contains("memory 256 → 384 MB"), "{screen}");
    assert!(h.sent.iter().all(|c| !matches!(c, Command::Reconfigure(_))));
    h.press(&["right", "enter"]);
    let mut config = running("web", 0).config;
    config.memory_mb = 384;
    config.args = vec!["--ipv4=10.0.0.3/24".into(), "hello world".into()];
    assert_eq!(h.sent.last(), Some(&Command::Reconfigure(Box::new(config))));
    h.update(Update::Form(FormReply::Submitted {
        name: label("web"),
        outcome: Ok(()),
    }));
    assert!(h.screen().contains("console of web"));
}

#[test]
fn help_lists_the_forms_keys_and_read_only_mode_has_no_form() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["n", "f1"]);
    let screen = h.screen();
    assert!(
        screen.contains("focus the previous pane or field"),
        "{screen}"
    );
    let mut h = Harness::with(crate::ui::config::Config::default(), true, 80, 24);
    h.update(Update::Unikernels(every_state()));
    h.press(&["n"]);
    let screen = h.screen();
    assert!(
        screen.contains("read-only: create is turned off"),
        "{screen}"
    );
    assert!(!screen.contains("create a unikernel"), "{screen}");
}

#[test]
fn enter_tries_a_failed_image_again_and_leaving_does_not() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["n"]);
    h.type_text(PATH);
    h.press(&["enter"]);
    h.update(Update::Form(FormReply::Image {
        path: PATH.into(),
        outcome: Err("not connected to the daemon; try again once it is back".into()),
    }));
    assert!(h.screen().contains("✗ not connected to the daemon"));
    h.press(&["backtab", "down"]);
    assert_eq!(h.sent, [Command::InspectImage(PATH.into())]);
    h.press(&["backtab", "enter"]);
    assert_eq!(
        h.sent,
        [
            Command::InspectImage(PATH.into()),
            Command::InspectImage(PATH.into())
        ]
    );
    assert!(h.screen().contains("checking…"));
}
