//! The launch rules a start is checked against, and the host facts they need:
//! gathered without the bookkeeping's lock, judged under it.

use super::SupervisorError;
use super::launch::Attachment;
use super::unit::Unit;
use crate::api::block::BlockDeviceInfo;
use crate::api::image::{ImageInfo, TenderReport};
use crate::api::label::Label;
use crate::api::policy::{Claim, Policy, Usage};
use crate::api::unikernel::UnikernelConfig;
use crate::api::validate::{self, Facts};
use crate::host::block::{BlockError, BlockFile, BlockStore};
use std::collections::BTreeMap;

/// The block devices a configuration names that the store has, by name. A
/// missing one is left out: validation reports it with the device it was
/// meant for.
pub(super) type Resolved = BTreeMap<Label, BlockFile>;

/// Looks up every block device `config` names, once per start.
pub(super) fn resolve(
    store: &BlockStore,
    config: &UnikernelConfig,
) -> Result<Resolved, BlockError> {
    let mut found = Resolved::new();
    for b in &config.blocks {
        match store.get(&b.block) {
            Ok(file) => {
                found.insert(b.block.clone(), file);
            }
            Err(BlockError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Pairs each of `config`'s block devices with its file, by name.
pub(super) fn attach(
    config: &UnikernelConfig,
    resolved: &Resolved,
) -> Result<Vec<Attachment>, BlockError> {
    config
        .blocks
        .iter()
        .map(|b| {
            let file = resolved
                .get(&b.block)
                .ok_or_else(|| BlockError::NotFound(b.block.clone()))?;
            Ok(Attachment {
                device: b.device.clone(),
                sector_size: b.sector_size,
                path: file.path.clone(),
            })
        })
        .collect()
}

/// The facts about the host a launch is checked against, apart from the
/// bookkeeping (see [`check`]).
pub(super) struct HostFacts {
    pub tender: TenderReport,
    pub policy: Policy,
    pub blocks: Resolved,
}

/// What the unikernels that hold resources take from the policy.
pub(super) fn usage(units: &BTreeMap<Label, Unit>) -> Usage {
    let claims: Vec<Claim> = units.values().filter_map(Unit::claim).collect();
    claims.iter().collect()
}

/// Every launch rule for `config`, against the host and the unikernels in
/// `units` but `except` (one being reconfigured is not its own rival).
pub(super) fn check(
    units: &BTreeMap<Label, Unit>,
    config: &UnikernelConfig,
    image: &ImageInfo,
    host: &HostFacts,
    except: Option<&Label>,
) -> Result<(), SupervisorError> {
    let others = || units.iter().filter(|(name, _)| Some(*name) != except);
    let names: Vec<Label> = others().map(|(name, _)| name.clone()).collect();
    let claims: Vec<Claim> = others().filter_map(|(_, u)| u.claim()).collect();
    let usage: Usage = claims.iter().collect();
    let blocks = block_infos(units, &host.blocks);
    let facts = Facts {
        image,
        tender: &host.tender,
        names_in_use: &names,
        blocks: &blocks,
        policy: &host.policy,
        usage: &usage,
    };
    let problems = validate::validate(config, &facts);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SupervisorError::Invalid(problems))
    }
}

/// The store's view of the block devices a configuration names.
fn block_infos(units: &BTreeMap<Label, Unit>, files: &Resolved) -> Vec<BlockDeviceInfo> {
    files
        .values()
        .map(|f| BlockDeviceInfo {
            name: f.name.clone(),
            size_mb: f.size_mb,
            attached_to: holder(units, &f.name),
        })
        .collect()
}

/// The unikernel holding block device `block`: one that runs or will run again.
pub(super) fn holder(units: &BTreeMap<Label, Unit>, block: &Label) -> Option<Label> {
    units
        .values()
        .find(|u| u.holds_resources() && u.config.blocks.iter().any(|b| b.block == *block))
        .map(|u| u.config.name.clone())
}
