//! `fulmar create`: the command line's device syntax, which is albatross's.

use crate::cli::CreateArgs;
use fulmar::api::label::{Label, LabelError};
use fulmar::api::mac::{Mac, MacError};
use fulmar::api::unikernel::{BlockConfig, DEFAULT_MEMORY_MB, NetConfig, UnikernelConfig};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateError {
    #[error("unikernel name: {0}")]
    Name(LabelError),
    #[error("--net {arg}: {why}")]
    Net { arg: String, why: String },
    #[error("--block {arg}: {why}")]
    Block { arg: String, why: String },
}

/// The configuration `fulmar create` asks for.
pub fn config(args: &CreateArgs) -> Result<UnikernelConfig, CreateError> {
    let name = Label::new(&args.name).map_err(CreateError::Name)?;
    Ok(UnikernelConfig {
        memory_mb: args.mem.unwrap_or(DEFAULT_MEMORY_MB),
        cpu: args.cpu.unwrap_or(0),
        nets: args.nets.iter().map(|n| net(n)).collect::<Result<_, _>>()?,
        blocks: args
            .blocks
            .iter()
            .map(|b| block(b))
            .collect::<Result<_, _>>()?,
        args: args.args.clone(),
        restart: args.restart.clone(),
        startup_priority: args.priority,
        ..UnikernelConfig::new(name)
    })
}

/// `IF[:BRIDGE][@MAC]`; `IF` alone means bridge `IF`.
pub fn net(arg: &str) -> Result<NetConfig, CreateError> {
    let bad = |why: String| CreateError::Net {
        arg: arg.into(),
        why,
    };
    let (rest, mac) = match arg.split_once('@') {
        Some((rest, mac)) => (
            rest,
            Some(
                mac.parse::<Mac>()
                    .map_err(|e: MacError| bad(e.to_string()))?,
            ),
        ),
        None => (arg, None),
    };
    let (interface, bridge) = rest.split_once(':').unwrap_or((rest, rest));
    if interface.is_empty() || bridge.is_empty() {
        return Err(bad("write IF, IF:BRIDGE or IF:BRIDGE@MAC".into()));
    }
    Ok(NetConfig {
        interface: interface.into(),
        bridge: bridge.into(),
        mac,
    })
}

/// `DEV[:BLOCK][@SECTOR]`; `DEV` alone means block device `DEV`.
pub fn block(arg: &str) -> Result<BlockConfig, CreateError> {
    let bad = |why: String| CreateError::Block {
        arg: arg.into(),
        why,
    };
    let (rest, sector_size) = match arg.split_once('@') {
        Some((rest, n)) => (
            rest,
            Some(
                n.parse::<u32>()
                    .map_err(|_| bad(format!("sector size {n:?} is not a number")))?,
            ),
        ),
        None => (arg, None),
    };
    let (device, block) = rest.split_once(':').unwrap_or((rest, rest));
    if device.is_empty() {
        return Err(bad("write DEV, DEV:BLOCK or DEV:BLOCK@SECTOR".into()));
    }
    Ok(BlockConfig {
        device: device.into(),
        block: Label::new(block).map_err(|e| bad(format!("block device name: {e}")))?,
        sector_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_follows_albatross() {
        assert_eq!(
            net("service").unwrap(),
            NetConfig {
                interface: "service".into(),
                bridge: "service".into(),
                mac: None
            }
        );
        assert_eq!(net("service:br0").unwrap().bridge, "br0");
        let n = net("service:br0@02:00:00:00:00:01").unwrap();
        assert_eq!(n.mac.unwrap().to_string(), "02:00:00:00:00:01");
        assert!(matches!(
            net("service:br0@nope"),
            Err(CreateError::Net { .. })
        ));
        assert!(matches!(net(":br0"), Err(CreateError::Net { .. })));
        assert!(matches!(net("service:"), Err(CreateError::Net { .. })));
    }

    #[test]
    fn block_follows_albatross() {
        let b = block("storage").unwrap();
        assert_eq!(
            (b.device.as_str(), b.block.as_str(), b.sector_size),
            ("storage", "storage", None)
        );
        let b = block("storage:disk1@4096").unwrap();
        assert_eq!(
            (b.device.as_str(), b.block.as_str(), b.sector_size),
            ("storage", "disk1", Some(4096))
        );
        assert!(matches!(
            block("storage:../etc"),
            Err(CreateError::Block { .. })
        ));
        assert!(matches!(
            block("storage@big"),
            Err(CreateError::Block { .. })
        ));
    }
}
