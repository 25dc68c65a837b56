//! What the form holds and what it makes of it: the fields as typed, the
//! image, one row per manifest device; and [`Form::check`], which parses the
//! fields into a [`UnikernelConfig`] and runs every launch rule on it
//! ([`validate`]) against what the model knows of the host, so each reason
//! can stand beside its field.

use crate::api::block::BlockDeviceInfo;
use crate::api::image::{Device, DeviceKind, ImageInfo, InspectReport, TenderReport};
use crate::api::label::Label;
use crate::api::mac::Mac;
use crate::api::policy::Usage;
use crate::api::protocol::ApiError;
use crate::api::unikernel::{
    BlockConfig, DEFAULT_MEMORY_MB, DEFAULT_SECTOR_SIZE, NetConfig, RestartPolicy,
    RestartPolicyError, UnikernelConfig, UnikernelInfo,
};
use crate::api::validate::{self, Facts, Field as Part, Problem};
use crate::ui::model::Model;
use crate::ui::screens::create::args;
use crate::ui::widgets::field::Field;

/// The rows of the form, in the order the focus visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    Image,
    Name,
    Memory,
    Cpu,
    Args,
    Restart,
    /// The exit codes of "restart on exit codes".
    Codes,
    Priority,
    /// The binding of manifest device `i`: a bridge or a block device.
    Device(usize),
    /// The sector size of block device `i`.
    Sector(usize),
    Submit,
}

/// The restart policies the form offers, in the order Left/Right cycle them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartKind {
    Never,
    OnFailure,
    OnCodes,
    Always,
}

impl RestartKind {
    const ALL: [RestartKind; 4] = [
        RestartKind::Never,
        RestartKind::OnFailure,
        RestartKind::OnCodes,
        RestartKind::Always,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RestartKind::Never => "never",
            RestartKind::OnFailure => "on failure",
            RestartKind::OnCodes => "on listed failures",
            RestartKind::Always => "always",
        }
    }

    pub fn cycle(self, step: isize) -> RestartKind {
        let i = RestartKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(0);
        let n = RestartKind::ALL.len() as isize;
        RestartKind::ALL[(i as isize + step).rem_euclid(n) as usize]
    }
}

/// The image the form is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// None chosen yet.
    None,
    /// Sent to the daemon to be checked; no answer yet.
    Inspecting {
        path: String,
    },
    Failed {
        path: String,
        why: String,
    },
    /// Checked and kept by the daemon, which named the tender that would run it.
    Ready {
        path: String,
        report: Box<InspectReport>,
    },
    /// The image a unikernel runs now (the edit form): the daemon keeps it
    /// and checks it and its tender again when it restarts the unikernel.
    Kept {
        info: Box<ImageInfo>,
    },
}

/// One manifest device and what the operator binds it to.
#[derive(Clone)]
pub struct DeviceRow {
    pub device: Device,
    /// A bridge (net) or a block device of the store (block).
    pub choice: Option<String>,
    /// A configured MAC address the edit form keeps; none: the derived one.
    pub mac: Option<Mac>,
    /// Block devices only; empty means the default.
    pub sector: Field,
}

impl DeviceRow {
    fn new(device: Device) -> DeviceRow {
        DeviceRow {
            device,
            choice: None,
            mac: None,
            sector: Field::new("").with_placeholder(DEFAULT_SECTOR_SIZE.to_string()),
        }
    }
}

/// Creating a unikernel, or changing one's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Create,
    /// The name and the image are the unikernel's and stay.
    Edit(Label),
}

#[derive(Clone)]
pub struct Form {
    pub mode: Mode,
    pub image_path: Field,
    pub image: Image,
    pub name: Field,
    pub memory: Field,
    pub cpu: Field,
    pub args: Field,
    pub restart: RestartKind,
    pub codes: Field,
    pub priority: Field,
    pub devices: Vec<DeviceRow>,
    /// The daemon's refusal of the last submit, shown until the next change.
    pub refused: Option<ApiError>,
}

/// What [`Form::check`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The configuration the fields make; `None` while one does not parse.
    pub config: Option<UnikernelConfig>,
    /// Why rows are wrong, in the order found; a row may have several.
    pub reasons: Vec<(Row, String)>,
    /// Why nothing can be checked yet (no image, no word from the daemon);
    /// the form shows it and does not submit.
    pub waiting: Option<String>,
    /// The MAC each net device will get, by device index, once the name is valid.
    pub macs: Vec<Option<Mac>>,
}

impl Check {
    pub fn ready(&self) -> bool {
        self.config.is_some() && self.reasons.is_empty() && self.waiting.is_none()
    }

    pub fn reasons_of(&self, row: Row) -> impl Iterator<Item = &str> {
        self.reasons
            .iter()
            .filter(move |(r, _)| *r == row)
            .map(|(_, why)| why.as_str())
    }

    fn has(&self, row: Row) -> bool {
        self.reasons.iter().any(|(r, _)| *r == row)
    }

    fn add(&mut self, row: Row, why: impl Into<String>) {
        let why = why.into();
        if !self.reasons.iter().any(|(r, w)| *r == row && *w == why) {
            self.reasons.push((row, why));
        }
    }
}

impl Form {
    pub fn create() -> Form {
        Form {
            mode: Mode::Create,
            image_path: Field::new("").with_placeholder("path to a Solo5 image (tab completes)"),
            image: Image::None,
            name: Field::new("").with_placeholder("letters, digits, - and ."),
            memory: Field::new(&DEFAULT_MEMORY_MB.to_string()),
            cpu: Field::new("0"),
            args: Field::new("").with_placeholder("(none)"),
            restart: RestartKind::OnFailure,
            codes: Field::new("").with_placeholder("e.g. 2,3 or signal,2-5"),
            priority: Field::new("0"),
            devices: Vec::new(),
            refused: None,
        }
    }

    /// The form filled in from a unikernel's settings, for changing them.
    pub fn edit(info: &UnikernelInfo) -> Form {
        let config = &info.config;
        let mut form = Form::create();
        form.mode = Mode::Edit(config.name.clone());
        form.name.set(config.name.as_str());
        form.memory.set(&config.memory_mb.to_string());
        form.cpu.set(&config.cpu.to_string());
        form.args.set(&args::join(&config.args));
        (form.restart, form.codes) = match &config.restart {
            RestartPolicy::Never => (RestartKind::Never, form.codes),
            RestartPolicy::OnFailure => (RestartKind::OnFailure, form.codes),
            RestartPolicy::Always => (RestartKind::Always, form.codes),
            listed @ RestartPolicy::OnFailureOf { .. } => {
                let mut field = form.codes;
                let text = listed.to_string();
                field.set(text.strip_prefix("on-failure:").unwrap_or(&text));
                (RestartKind::OnCodes, field)
            }
        };
        form.priority.set(&config.startup_priority.to_string());
        form.image = Image::Kept {
            info: Box::new(kept_image(info)),
        };
        form.devices = info
            .devices
            .iter()
            .map(|device| {
                let mut row = DeviceRow::new(device.clone());
                if let Some(net) = config.nets.iter().find(|n| n.interface == device.name) {
                    row.choice = Some(net.bridge.clone());
                    row.mac = net.mac;
                }
                if let Some(b) = config.blocks.iter().find(|b| b.device == device.name) {
                    row.choice = Some(b.block.to_string());
                    if let Some(size) = b.sector_size {
                        row.sector.set(&size.to_string());
                    }
                }
                row
            })
            .collect();
        form
    }

    /// The rows the focus visits: the name and image of a unikernel being
    /// edited are fixed; the exit codes only with "on exit codes".
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        if self.mode == Mode::Create {
            rows.extend([Row::Image, Row::Name]);
        }
        rows.extend([Row::Memory, Row::Cpu, Row::Args, Row::Restart]);
        if self.restart == RestartKind::OnCodes {
            rows.push(Row::Codes);
        }
        rows.push(Row::Priority);
        for (i, row) in self.devices.iter().enumerate() {
            rows.push(Row::Device(i));
            if row.device.kind == DeviceKind::Block {
                rows.push(Row::Sector(i));
            }
        }
        rows.push(Row::Submit);
        rows
    }

    /// The text field of `row`, if it is one.
    pub fn field_mut(&mut self, row: Row) -> Option<&mut Field> {
        match row {
            Row::Image => Some(&mut self.image_path),
            Row::Name => Some(&mut self.name),
            Row::Memory => Some(&mut self.memory),
            Row::Cpu => Some(&mut self.cpu),
            Row::Args => Some(&mut self.args),
            Row::Codes => Some(&mut self.codes),
            Row::Priority => Some(&mut self.priority),
            Row::Sector(i) => self.devices.get_mut(i).map(|d| &mut d.sector),
            Row::Restart | Row::Device(_) | Row::Submit => None,
        }
    }

    /// The image the daemon checked; the device rows follow its manifest,
    /// keeping what was chosen for a device of the same name and kind.
    pub fn set_image(&mut self, path: String, report: InspectReport) {
        let old = std::mem::take(&mut self.devices);
        self.devices = report
            .image
            .devices
            .iter()
            .map(|device| {
                old.iter()
                    .find(|row| row.device == *device)
                    .cloned()
                    .unwrap_or_else(|| DeviceRow::new(device.clone()))
            })
            .collect();
        self.image = Image::Ready {
            path,
            report: Box::new(report),
        };
    }

    /// What device `i` can be bound to here: the host's bridges, or the
    /// block devices no other unikernel holds (with their sizes).
    pub fn options(&self, i: usize, model: &Model) -> Vec<(String, Option<u64>)> {
        let Some(row) = self.devices.get(i) else {
            return Vec::new();
        };
        match row.device.kind {
            DeviceKind::Net => model
                .policy
                .iter()
                .flat_map(|p| &p.policy.bridges)
                .map(|b| (b.clone(), None))
                .collect(),
            DeviceKind::Block => model
                .blocks
                .iter()
                .flatten()
                .filter(|b| b.attached_to.is_none() || b.attached_to.as_ref() == self.own_name())
                .map(|b| (b.name.to_string(), Some(b.size_mb)))
                .collect(),
        }
    }

    /// Moves device `i`'s choice `step` places through its options, with
    /// "none" between the last and the first.
    pub fn cycle_device(&mut self, i: usize, step: isize, model: &Model) {
        let options = self.options(i, model);
        let Some(row) = self.devices.get_mut(i) else {
            return;
        };
        let slots = options.len() as isize + 1;
        let at = row
            .choice
            .as_ref()
            .and_then(|c| options.iter().position(|(o, _)| o == c))
            .map_or(0, |p| p as isize + 1);
        let next = (at + step).rem_euclid(slots);
        row.choice = (next > 0).then(|| options[next as usize - 1].0.clone());
    }

    fn own_name(&self) -> Option<&Label> {
        match &self.mode {
            Mode::Create => None,
            Mode::Edit(name) => Some(name),
        }
    }

    /// Parses every field and checks the result by every launch rule
    /// against the host as `model` knows it.
    pub fn check(&self, model: &Model) -> Check {
        let mut check = Check {
            config: None,
            reasons: Vec::new(),
            waiting: None,
            macs: vec![None; self.devices.len()],
        };
        let parsed = self.parse(&mut check);
        let image = match &self.image {
            Image::None => {
                check.waiting = Some("choose an image first".into());
                None
            }
            Image::Inspecting { path } => {
                check.waiting = Some(format!("the daemon is checking {path}…"));
                None
            }
            Image::Failed { why, .. } => {
                check.add(Row::Image, why.as_str());
                None
            }
            Image::Ready { path, report } => {
                if path != self.image_path.text() {
                    check.add(
                        Row::Image,
                        format!("press enter to check this path; what is shown is {path}"),
                    );
                }
                Some((&report.image, report.tender.clone()))
            }
            Image::Kept { info } => Some((
                info.as_ref(),
                // The daemon checks the tender when it restarts the unikernel.
                TenderReport::Found {
                    path: String::new(),
                    abi_version: info.abi_version,
                },
            )),
        };
        for (i, row) in self.devices.iter().enumerate() {
            if row.device.kind == DeviceKind::Net && !check.has(Row::Name) {
                let net = net_config(row);
                check.macs[i] = Some(parsed.mac_of(&net));
            }
        }
        let Some(policy) = &model.policy else {
            check
                .waiting
                .get_or_insert_with(|| "waiting for the host's policy from the daemon".into());
            return check;
        };
        let Some((image, tender)) = image else {
            return check;
        };
        let names: Vec<Label> = model
            .unikernels
            .iter()
            .map(|u| u.config.name.clone())
            .filter(|n| Some(n) != self.own_name())
            .collect();
        let blocks: Vec<BlockDeviceInfo> = model.blocks.clone().unwrap_or_default();
        let usage = self.usage_of_others(model, &policy.used);
        let facts = Facts {
            image,
            tender: &tender,
            names_in_use: &names,
            blocks: &blocks,
            policy: &policy.policy,
            usage: &usage,
        };
        let parse_failed: Vec<Row> = check.reasons.iter().map(|(r, _)| *r).collect();
        for problem in validate::validate(&parsed, &facts) {
            let row = self.row_of(&problem);
            if !parse_failed.contains(&row) {
                check.add(row, self.reason(&problem));
            }
        }
        self.add_refusal(&mut check);
        if parse_failed.is_empty() {
            check.config = Some(parsed);
        }
        check
    }

    /// The fields as a configuration; a field that does not parse gets its
    /// reason, and a stand-in value whose problems [`Form::check`] drops.
    fn parse(&self, check: &mut Check) -> UnikernelConfig {
        let name = match &self.mode {
            Mode::Edit(name) => name.clone(),
            Mode::Create => Label::new(self.name.text()).unwrap_or_else(|e| {
                check.add(Row::Name, e.to_string());
                Label::new("unnamed").unwrap_or_else(|_| unreachable!("a valid label"))
            }),
        };
        let mut config = UnikernelConfig::new(name);
        if let Some(mb) = number(
            check,
            Row::Memory,
            self.memory.text(),
            "the memory as a whole number of MB, e.g. 512",
        ) {
            config.memory_mb = mb;
        }
        if let Some(cpu) = number(check, Row::Cpu, self.cpu.text(), "a CPU number, e.g. 0") {
            config.cpu = cpu;
        }
        if let Some(priority) = number(
            check,
            Row::Priority,
            self.priority.text(),
            "a whole number, e.g. 0 or -10 (higher starts first)",
        ) {
            config.startup_priority = priority;
        }
        match args::split(self.args.text()) {
            Ok(words) => config.args = words,
            Err(e) => check.add(Row::Args, e.to_string()),
        }
        config.restart = match self.restart {
            RestartKind::Never => RestartPolicy::Never,
            RestartKind::OnFailure => RestartPolicy::OnFailure,
            RestartKind::Always => RestartPolicy::Always,
            RestartKind::OnCodes => match format!("on-failure:{}", self.codes.text()).parse() {
                Ok(listed) => listed,
                Err(RestartPolicyError { why }) => {
                    check.add(
                        Row::Codes,
                        format!("{why}: list exit codes and \"signal\", e.g. 2,3 or signal,2-5"),
                    );
                    RestartPolicy::Never
                }
            },
        };
        for (i, row) in self.devices.iter().enumerate() {
            let Some(choice) = &row.choice else { continue };
            match row.device.kind {
                DeviceKind::Net => config.nets.push(net_config(row)),
                DeviceKind::Block => {
                    let sector_size = match row.sector.text().trim() {
                        "" => None,
                        text => number(
                            check,
                            Row::Sector(i),
                            text,
                            "the sector size in bytes, e.g. 512 or 4096",
                        ),
                    };
                    match Label::new(choice) {
                        Ok(block) => config.blocks.push(BlockConfig {
                            device: row.device.name.clone(),
                            block,
                            sector_size,
                        }),
                        Err(e) => check.add(Row::Device(i), e.to_string()),
                    }
                }
            }
        }
        config
    }

    /// What the other unikernels hold: a unikernel being edited gives up
    /// its own CPU and memory to restart, so they count as free.
    fn usage_of_others(&self, model: &Model, used: &Usage) -> Usage {
        let mut usage = used.clone();
        let own = self.own_name().and_then(|name| model.unikernel(name));
        if let Some(info) = own.filter(|u| u.state.holds_resources()) {
            usage.memory_mb = usage.memory_mb.saturating_sub(info.config.memory_mb);
            if let Some(count) = usage.cpus.get_mut(&info.config.cpu) {
                *count = count.saturating_sub(1);
            }
        }
        usage
    }

    fn row_of(&self, problem: &Problem) -> Row {
        let device = |name: &str| self.devices.iter().position(|d| d.device.name == name);
        match (problem.field(), problem) {
            (Part::Name, _) => Row::Name,
            (Part::Image, _) => Row::Image,
            (Part::Memory, _) => Row::Memory,
            (Part::Cpu, _) => Row::Cpu,
            (Part::Device(name), Problem::SectorSize { .. } | Problem::SectorAlign { .. }) => {
                device(&name).map_or(Row::Image, Row::Sector)
            }
            // A device the manifest lacks has no row: it is the image's business.
            (Part::Device(name), _) => device(&name).map_or(Row::Image, Row::Device),
        }
    }

    /// The problem's reason, in the form's words where the CLI's would mislead.
    fn reason(&self, problem: &Problem) -> String {
        match problem {
            Problem::Unbound {
                kind: DeviceKind::Net,
                ..
            } => "not bound: choose a bridge".into(),
            Problem::Unbound {
                kind: DeviceKind::Block,
                ..
            } => "not bound: choose a block device".into(),
            other => other.to_string(),
        }
    }

    /// The daemon's word on the last submit, beside the fields it names.
    fn add_refusal(&self, check: &mut Check) {
        let Some(refused) = &self.refused else {
            return;
        };
        if refused.problems.is_empty() {
            check.add(Row::Submit, refused.message.as_str());
        }
        for problem in &refused.problems {
            check.add(self.row_of(problem), self.reason(problem));
        }
    }
}

/// `text` as a number, or the reason "write {what}" on `row`.
fn number<T: std::str::FromStr>(check: &mut Check, row: Row, text: &str, what: &str) -> Option<T> {
    let parsed = text.trim().parse().ok();
    if parsed.is_none() {
        check.add(row, format!("write {what}"));
    }
    parsed
}

fn net_config(row: &DeviceRow) -> NetConfig {
    NetConfig {
        interface: row.device.name.clone(),
        bridge: row.choice.clone().unwrap_or_default(),
        mac: row.mac,
    }
}

/// The facts of a unikernel's image that the daemon reports; what it does
/// not report (ABI, size) the launch rules do not read.
fn kept_image(info: &UnikernelInfo) -> ImageInfo {
    ImageInfo {
        target: info.target,
        abi_version: 0,
        manifest_version: 0,
        devices: info.devices.clone(),
        sha256: info.digest.clone(),
        compressed: false,
        size: 0,
    }
}
