//! Every rule a launch applies (the first step of a launch), as one pure
//! function over the configuration and facts about the host. The supervisor runs
//! it before it touches anything; the create form runs it as the operator types.

use crate::api::block::BlockDeviceInfo;
use crate::api::image::{DeviceKind, ImageInfo, Target, TenderReport};
use crate::api::label::Label;
use crate::api::mac::Mac;
use crate::api::policy::{Policy, Usage, format_cpus};
use crate::api::unikernel::{DEFAULT_SECTOR_SIZE, UnikernelConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// solo5-hvt refuses more guest memory than this.
pub const HVT_MAX_MEMORY_MB: u64 = 4096;

/// What the host looks like at the moment of the check.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub image: &'a ImageInfo,
    pub tender: &'a TenderReport,
    /// Unikernels the supervisor already knows (any state).
    pub names_in_use: &'a [Label],
    /// Every block device in the store.
    pub blocks: &'a [BlockDeviceInfo],
    pub policy: &'a Policy,
    /// What the other unikernels hold.
    pub usage: &'a Usage,
}

/// The part of the form a problem belongs to.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    Name,
    Image,
    Memory,
    Cpu,
    /// A manifest device (or a configured one the manifest lacks), by name.
    Device(String),
}

/// One reason the launch would fail, with what would fix it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[serde(tag = "problem", content = "details", rename_all = "kebab-case")]
pub enum Problem {
    #[error("a unikernel named {0} exists already: pick another name or remove it")]
    NameTaken(Label),
    #[error("{0}")]
    NoTender(String),
    #[error("memory must be at least 1 MB")]
    NoMemory,
    #[error("{asked} MB is more than solo5-hvt accepts ({HVT_MAX_MEMORY_MB} MB): lower the memory")]
    HvtMemory { asked: u64 },
    #[error(
        "{asked} MB asked but only {free} MB of {total} MB are free: lower the memory or stop another unikernel"
    )]
    Memory { asked: u64, free: u64, total: u64 },
    #[error("CPU {cpu} is not online here: use one of {}", format_cpus(.online))]
    Cpu { cpu: u32, online: Vec<u32> },
    #[error("the image's manifest declares {kind} device {device}: bind it with --{kind} {device}{}", if *.kind == DeviceKind::Net { "[:BRIDGE]" } else { "[:BLOCK]" })]
    Unbound { device: String, kind: DeviceKind },
    #[error("the image declares no device {device}: its manifest has {}", names_or_none(.declared))]
    NotInManifest {
        device: String,
        declared: Vec<String>,
    },
    #[error(
        "device {device} is a {declared} device in the manifest, not {given}: bind it with --{declared}"
    )]
    WrongKind {
        device: String,
        declared: DeviceKind,
        given: DeviceKind,
    },
    #[error("device {0} is bound twice: bind it once")]
    BoundTwice(String),
    #[error(
        "{mac} (for {device}) is {why}, which no interface can have: use a locally administered unicast address such as 02:00:00:00:00:01"
    )]
    UnusableMac {
        device: String,
        mac: Mac,
        why: String,
    },
    #[error("bridge {bridge} (for {device}) does not exist: create it or use one of: {}", names_or_none(.bridges))]
    NoBridge {
        device: String,
        bridge: String,
        bridges: Vec<String>,
    },
    #[error(
        "block device {block} (for {device}) does not exist: create it with `fulmar block create {block} SIZE_MB`"
    )]
    NoBlock { device: String, block: Label },
    #[error(
        "block device {block} (for {device}) is attached to {holder}: destroy {holder} or pick another block device"
    )]
    BlockAttached {
        device: String,
        block: Label,
        holder: Label,
    },
    #[error("block device {block} is bound to both {first} and {second}: give each device its own")]
    BlockTwice {
        block: Label,
        first: String,
        second: String,
    },
    #[error(
        "sector size {size} for {device} is not a power of two of at least 512: use 512, 4096, ..."
    )]
    SectorSize { device: String, size: u32 },
    #[error(
        "block device {block} ({size_mb} MB) is not a whole number of {size}-byte sectors (for {device}): pick a smaller sector size"
    )]
    SectorAlign {
        device: String,
        block: Label,
        size_mb: u64,
        size: u32,
    },
}

fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Problem {
    pub fn field(&self) -> Field {
        match self {
            Problem::NameTaken(_) => Field::Name,
            Problem::NoTender(_) => Field::Image,
            Problem::NoMemory | Problem::HvtMemory { .. } | Problem::Memory { .. } => Field::Memory,
            Problem::Cpu { .. } => Field::Cpu,
            Problem::Unbound { device, .. }
            | Problem::NotInManifest { device, .. }
            | Problem::WrongKind { device, .. }
            | Problem::BoundTwice(device)
            | Problem::UnusableMac { device, .. }
            | Problem::NoBridge { device, .. }
            | Problem::NoBlock { device, .. }
            | Problem::BlockAttached { device, .. }
            | Problem::SectorSize { device, .. }
            | Problem::SectorAlign { device, .. } => Field::Device(device.clone()),
            Problem::BlockTwice { second, .. } => Field::Device(second.clone()),
        }
    }
}

/// Every problem with launching `config` on a host described by `facts`; empty
/// when the launch may go ahead.
pub fn validate(config: &UnikernelConfig, facts: &Facts) -> Vec<Problem> {
    let mut problems = Vec::new();
    if facts.names_in_use.contains(&config.name) {
        problems.push(Problem::NameTaken(config.name.clone()));
    }
    if let TenderReport::Missing { error } = facts.tender {
        problems.push(Problem::NoTender(error.clone()));
    }
    check_resources(config, facts, &mut problems);
    check_devices(config, facts, &mut problems);
    problems
}

fn check_resources(config: &UnikernelConfig, facts: &Facts, problems: &mut Vec<Problem>) {
    let asked = config.memory_mb;
    let total = facts.policy.memory_mb;
    let free = total.saturating_sub(facts.usage.memory_mb);
    if asked == 0 {
        problems.push(Problem::NoMemory);
    } else if facts.image.target == Target::Hvt && asked > HVT_MAX_MEMORY_MB {
        problems.push(Problem::HvtMemory { asked });
    } else if asked > free {
        problems.push(Problem::Memory { asked, free, total });
    }
    if !facts.policy.cpus.contains(&config.cpu) {
        problems.push(Problem::Cpu {
            cpu: config.cpu,
            online: facts.policy.cpus.clone(),
        });
    }
}

fn check_devices(config: &UnikernelConfig, facts: &Facts, problems: &mut Vec<Problem>) {
    let declared: BTreeMap<&str, DeviceKind> = facts
        .image
        .devices
        .iter()
        .map(|d| (d.name.as_str(), d.kind))
        .collect();
    let given = config
        .nets
        .iter()
        .map(|n| (n.interface.as_str(), DeviceKind::Net))
        .chain(
            config
                .blocks
                .iter()
                .map(|b| (b.device.as_str(), DeviceKind::Block)),
        );
    let mut bound = BTreeMap::new();
    for (device, kind) in given {
        if bound.insert(device, kind).is_some() {
            problems.push(Problem::BoundTwice(device.into()));
        }
        match declared.get(device) {
            None => problems.push(Problem::NotInManifest {
                device: device.into(),
                declared: declared.keys().map(|d| d.to_string()).collect(),
            }),
            Some(&want) if want != kind => problems.push(Problem::WrongKind {
                device: device.into(),
                declared: want,
                given: kind,
            }),
            Some(_) => {}
        }
    }
    for d in &facts.image.devices {
        if !bound.contains_key(d.name.as_str()) {
            problems.push(Problem::Unbound {
                device: d.name.clone(),
                kind: d.kind,
            });
        }
    }
    for net in &config.nets {
        if let Some((mac, why)) = net.mac.and_then(|m| Some((m, m.unusable()?))) {
            problems.push(Problem::UnusableMac {
                device: net.interface.clone(),
                mac,
                why: why.into(),
            });
        }
        if !facts.policy.bridges.contains(&net.bridge) {
            problems.push(Problem::NoBridge {
                device: net.interface.clone(),
                bridge: net.bridge.clone(),
                bridges: facts.policy.bridges.clone(),
            });
        }
    }
    check_blocks(config, facts, problems);
}

fn check_blocks(config: &UnikernelConfig, facts: &Facts, problems: &mut Vec<Problem>) {
    let mut taken: BTreeMap<&Label, &str> = BTreeMap::new();
    for b in &config.blocks {
        let device = b.device.clone();
        if let Some(first) = taken.insert(&b.block, &b.device) {
            problems.push(Problem::BlockTwice {
                block: b.block.clone(),
                first: first.into(),
                second: device.clone(),
            });
        }
        let sector = b.sector_size.unwrap_or(DEFAULT_SECTOR_SIZE);
        if sector < 512 || !sector.is_power_of_two() {
            problems.push(Problem::SectorSize {
                device: device.clone(),
                size: sector,
            });
        }
        let Some(info) = facts.blocks.iter().find(|i| i.name == b.block) else {
            problems.push(Problem::NoBlock {
                device,
                block: b.block.clone(),
            });
            continue;
        };
        if let Some(holder) = info.attached_to.as_ref().filter(|h| **h != config.name) {
            problems.push(Problem::BlockAttached {
                device: device.clone(),
                block: b.block.clone(),
                holder: holder.clone(),
            });
        }
        if sector.is_power_of_two() && (info.size_mb * 1024 * 1024) % u64::from(sector) != 0 {
            problems.push(Problem::SectorAlign {
                device,
                block: b.block.clone(),
                size_mb: info.size_mb,
                size: sector,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::image::Device;
    use crate::api::unikernel::{BlockConfig, NetConfig};

    fn label(s: &str) -> Label {
        Label::new(s).unwrap()
    }

    struct Host {
        image: ImageInfo,
        tender: TenderReport,
        names: Vec<Label>,
        blocks: Vec<BlockDeviceInfo>,
        policy: Policy,
        usage: Usage,
    }

    impl Host {
        /// An hvt image with `storage` (block) and `service0` (net), and a host that can run it.
        fn new() -> Host {
            Host {
                image: ImageInfo {
                    target: Target::Hvt,
                    abi_version: 2,
                    manifest_version: 1,
                    devices: vec![
                        Device {
                            name: "storage".into(),
                            kind: DeviceKind::Block,
                        },
                        Device {
                            name: "service0".into(),
                            kind: DeviceKind::Net,
                        },
                    ],
                    sha256: "0".repeat(64),
                    compressed: false,
                    size: 4096,
                },
                tender: TenderReport::Found {
                    path: "/usr/bin/solo5-hvt".into(),
                    abi_version: 2,
                },
                names: vec![label("other")],
                blocks: vec![
                    BlockDeviceInfo {
                        name: label("disk"),
                        size_mb: 1,
                        attached_to: None,
                    },
                    BlockDeviceInfo {
                        name: label("held"),
                        size_mb: 1,
                        attached_to: Some(label("other")),
                    },
                ],
                policy: Policy {
                    cpus: vec![0, 1],
                    memory_mb: 8192,
                    disk_mb: 100_000,
                    bridges: vec!["br0".into()],
                },
                usage: Usage {
                    memory_mb: 6144,
                    ..Usage::default()
                },
            }
        }

        fn check(&self, config: &UnikernelConfig) -> Vec<Problem> {
            validate(
                config,
                &Facts {
                    image: &self.image,
                    tender: &self.tender,
                    names_in_use: &self.names,
                    blocks: &self.blocks,
                    policy: &self.policy,
                    usage: &self.usage,
                },
            )
        }
    }

    fn good() -> UnikernelConfig {
        let mut c = UnikernelConfig::new(label("web"));
        c.nets.push(NetConfig {
            interface: "service0".into(),
            bridge: "br0".into(),
            mac: None,
        });
        c.blocks.push(BlockConfig {
            device: "storage".into(),
            block: label("disk"),
            sector_size: None,
        });
        c
    }

    fn only(problems: Vec<Problem>) -> Problem {
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn a_good_configuration_passes() {
        assert_eq!(Host::new().check(&good()), vec![]);
    }

    #[test]
    fn name_must_be_free() {
        let mut c = good();
        c.name = label("other");
        assert_eq!(
            only(Host::new().check(&c)),
            Problem::NameTaken(label("other"))
        );
    }

    #[test]
    fn a_tender_must_exist() {
        let mut host = Host::new();
        host.tender = TenderReport::Missing {
            error: "no tender for hvt".into(),
        };
        let p = only(host.check(&good()));
        assert_eq!(p.field(), Field::Image);
        assert_eq!(p.to_string(), "no tender for hvt");
    }

    #[test]
    fn memory_must_fit() {
        let host = Host::new();
        for (mb, want) in [
            (2048, None),
            (0, Some(Problem::NoMemory)),
            (
                2049,
                Some(Problem::Memory {
                    asked: 2049,
                    free: 2048,
                    total: 8192,
                }),
            ),
            (4097, Some(Problem::HvtMemory { asked: 4097 })),
        ] {
            let mut c = good();
            c.memory_mb = mb;
            assert_eq!(host.check(&c).into_iter().next(), want, "{mb} MB");
        }
    }

    #[test]
    fn spt_may_use_more_than_4096_mb() {
        let mut host = Host::new();
        host.image.target = Target::Spt;
        let mut c = good();
        c.memory_mb = 4097;
        assert!(matches!(
            only(host.check(&c)),
            Problem::Memory { asked: 4097, .. }
        ));
    }

    #[test]
    fn cpu_must_be_online() {
        let mut c = good();
        c.cpu = 1;
        assert_eq!(Host::new().check(&c), vec![]);
        c.cpu = 7;
        let p = only(Host::new().check(&c));
        assert_eq!(p.to_string(), "CPU 7 is not online here: use one of 0-1");
    }

    #[test]
    fn every_manifest_device_must_be_bound() {
        let mut c = good();
        c.nets.clear();
        let p = only(Host::new().check(&c));
        assert_eq!(
            p,
            Problem::Unbound {
                device: "service0".into(),
                kind: DeviceKind::Net
            }
        );
        assert_eq!(p.field(), Field::Device("service0".into()));
        assert!(p.to_string().contains("--net service0"), "{p}");
    }

    #[test]
    fn no_device_beyond_the_manifest() {
        let mut c = good();
        c.nets.push(NetConfig {
            interface: "extra".into(),
            bridge: "br0".into(),
            mac: None,
        });
        let p = only(Host::new().check(&c));
        assert_eq!(
            p.to_string(),
            "the image declares no device extra: its manifest has service0, storage"
        );
    }

    #[test]
    fn device_kinds_must_match() {
        let mut c = good();
        c.nets[0].interface = "storage".into();
        c.blocks[0].device = "service0".into();
        let problems = Host::new().check(&c);
        assert!(problems.contains(&Problem::WrongKind {
            device: "storage".into(),
            declared: DeviceKind::Block,
            given: DeviceKind::Net
        }));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn a_device_is_bound_once() {
        let mut c = good();
        c.nets.push(c.nets[0].clone());
        assert_eq!(
            only(Host::new().check(&c)),
            Problem::BoundTwice("service0".into())
        );
    }

    #[test]
    fn bridges_must_exist() {
        let mut c = good();
        c.nets[0].bridge = "br9".into();
        let p = only(Host::new().check(&c));
        assert_eq!(
            p.to_string(),
            "bridge br9 (for service0) does not exist: create it or use one of: br0"
        );
    }

    #[test]
    fn broadcast_multicast_and_zero_macs_are_refused() {
        for bad in [
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
        ] {
            let mut c = good();
            c.nets[0].mac = Some(bad.parse().unwrap());
            let p = only(Host::new().check(&c));
            assert_eq!(p.field(), Field::Device("service0".into()));
            let message = p.to_string();
            assert!(
                message.starts_with(&format!("{bad} (for service0) is ")),
                "{message}"
            );
            assert!(message.contains("02:00:00:00:00:01"), "{message}");
        }
        let mut c = good();
        c.nets[0].mac = Some("02:ab:cd:00:01:ff".parse().unwrap());
        assert_eq!(Host::new().check(&c), vec![]);
    }

    #[test]
    fn block_devices_must_exist_and_be_free() {
        let mut c = good();
        c.blocks[0].block = label("none");
        assert!(matches!(
            only(Host::new().check(&c)),
            Problem::NoBlock { .. }
        ));
        c.blocks[0].block = label("held");
        let p = only(Host::new().check(&c));
        assert!(p.to_string().contains("is attached to other"), "{p}");
    }

    #[test]
    fn a_block_device_serves_one_device() {
        let mut host = Host::new();
        host.image.devices.push(Device {
            name: "logs".into(),
            kind: DeviceKind::Block,
        });
        let mut c = good();
        c.blocks.push(BlockConfig {
            device: "logs".into(),
            block: label("disk"),
            sector_size: None,
        });
        let p = only(host.check(&c));
        assert_eq!(p.field(), Field::Device("logs".into()));
        assert!(matches!(p, Problem::BlockTwice { .. }));
    }

    #[test]
    fn sector_sizes_are_powers_of_two_that_divide_the_device() {
        let host = Host::new();
        for (size, ok) in [
            (512, true),
            (4096, true),
            (1 << 20, true),
            (256, false),
            (1000, false),
            (2 << 20, false),
        ] {
            let mut c = good();
            c.blocks[0].sector_size = Some(size);
            assert_eq!(host.check(&c).is_empty(), ok, "sector size {size}");
        }
        let mut c = good();
        c.blocks[0].sector_size = Some(2 << 20);
        assert!(matches!(
            only(host.check(&c)),
            Problem::SectorAlign { size_mb: 1, .. }
        ));
    }
}
