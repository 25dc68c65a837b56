//! Bridges and taps: the host side of a unikernel's network devices.
//!
//! A unikernel's network device is a tap the tender opens, attached to a bridge
//! the operator made. fulmar creates the tap when a unikernel starts and deletes
//! it when the unikernel is gone. On Linux taps are named `vmmtapN` (the smallest
//! free N, as albatross names them), made through /dev/net/tun and looked up,
//! attached and deleted through rtnetlink, so the daemon sees the interfaces of
//! its own network namespace and forks nothing; on FreeBSD the kernel names them
//! (`tapN`) and ifconfig does the work, run with argv, never through a shell.

use crate::api::stats::TapStats;

/// A tap fulmar created and attached to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    pub name: String,
    pub bridge: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("bridge {bridge} does not exist: {}", bridge_hint(.bridge, .available))]
    NoBridge {
        bridge: String,
        available: Vec<String>,
    },
    #[error(
        "{name:?} is not a network interface name: use 1 to {MAX_NAME_LEN} characters without '/', ':' or spaces"
    )]
    BadName { name: String },
    #[error(
        "{name} is not a tap, so fulmar will not delete it: check which interface the unikernel really used"
    )]
    NotATap { name: String },
    #[cfg(target_os = "linux")]
    #[error(
        "cannot {action} through netlink ({why}): check the interfaces with `ip -d link`; changing them takes CAP_NET_ADMIN"
    )]
    Netlink { action: String, why: String },
    #[cfg(target_os = "linux")]
    #[error(
        "cannot create tap {tap} through /dev/net/tun ({why}): load the tun module (`modprobe tun`) and run the daemon as root"
    )]
    Tun { tap: String, why: String },
    #[cfg(target_os = "freebsd")]
    #[error("cannot run {program} ({why}): check that /sbin is on PATH")]
    Spawn { program: String, why: String },
    #[cfg(target_os = "freebsd")]
    #[error("`{command}` failed: {why}")]
    Failed { command: String, why: String },
    #[error(
        "no free tap name after {attempts} attempts: other programs keep creating vmmtap interfaces; try again"
    )]
    NoFreeName { attempts: u32 },
    #[error("cannot record tap {tap} before making it ({why}): check the runtime directory's disk")]
    Record { tap: String, why: String },
}

/// Told each tap name before a tap of that name may come to exist, so that a
/// crash at any moment leaves a record of every tap to reclaim.
pub type Record<'a> = &'a mut dyn FnMut(&str) -> Result<(), String>;

fn bridge_hint(bridge: &str, available: &[String]) -> String {
    let create = os::create_bridge_hint(bridge);
    if available.is_empty() {
        format!("create it ({create}); the host has no bridge yet")
    } else {
        format!(
            "create it ({create}) or use one of: {}",
            available.join(", ")
        )
    }
}

/// IFNAMSIZ less the terminating NUL, on Linux and FreeBSD alike.
const MAX_NAME_LEN: usize = 15;

/// Refuses names the kernel would refuse, and anything that would lead a path
/// built from the name out of its directory.
fn check_name(name: &str) -> Result<(), NetError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(NetError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The host's bridges, sorted by name.
pub fn bridges() -> Result<Vec<String>, NetError> {
    let mut bridges = os::bridges()?;
    bridges.sort();
    Ok(bridges)
}

/// Creates a tap, brings it up and attaches it to `bridge`. Either all of that
/// happens or nothing is left behind; `record` hears the name first, and the
/// tap is made for `owner` to open without privileges (the tender's uid).
pub fn create_tap(bridge: &str, owner: Option<u32>, record: Record) -> Result<Tap, NetError> {
    let available = bridges()?;
    if !available.iter().any(|b| b == bridge) {
        return Err(NetError::NoBridge {
            bridge: bridge.to_owned(),
            available,
        });
    }
    attach_new_tap(bridge, owner, record)
}

/// The part of [`create_tap`] after the bridge check; separate so tests can make
/// the attach step fail.
fn attach_new_tap(bridge: &str, owner: Option<u32>, record: Record) -> Result<Tap, NetError> {
    let name = os::new_tap(owner, record)?;
    if let Err(error) = os::attach(&name, bridge) {
        if let Err(undo) = os::destroy(&name) {
            tracing::warn!(tap = %name, %undo, "could not delete the tap of a failed attach");
        }
        return Err(error);
    }
    Ok(Tap {
        name,
        bridge: bridge.to_owned(),
    })
}

/// Deletes tap `name`. A tap that is already gone is fine (clean-up paths call
/// this after crashes); an interface that is not a tap is refused, so a stale or
/// corrupt record can never delete one of the host's own interfaces.
pub fn delete_tap(name: &str) -> Result<(), NetError> {
    check_name(name)?;
    match os::kind(name)? {
        Kind::Missing => return Ok(()),
        Kind::Other => {
            return Err(NetError::NotATap {
                name: name.to_owned(),
            });
        }
        Kind::Tap => {}
    }
    match os::destroy(name) {
        // Someone else deleted it between the look and the delete.
        Err(_) if os::kind(name)? == Kind::Missing => Ok(()),
        result => result,
    }
}

/// Whether tap `name` exists (an interface of that name that is not a tap does
/// not count).
#[cfg(test)]
pub fn tap_exists(name: &str) -> Result<bool, NetError> {
    check_name(name)?;
    Ok(os::kind(name)? == Kind::Tap)
}

/// The traffic through interface `name` since it was made, or `None` if there
/// is no such interface.
pub fn traffic(name: &str) -> Result<Option<TapStats>, NetError> {
    check_name(name)?;
    os::traffic(name)
}

/// What an interface name stands for on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Tap,
    Other,
}

#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "linux")]
mod linux {
    use super::{Kind, NetError, Record, TapStats};
    use netlink_packet_core::{
        NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{
        InfoData, InfoKind, InfoTun, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    };
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    use std::collections::BTreeSet;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::sync::Mutex;

    const PREFIX: &str = "vmmtap";

    /// From `<linux/if_link.h>` (libc lacks it): the tun link-info attribute
    /// holding IFF_TUN or IFF_TAP, reported by Linux 4.15 and later.
    const IFLA_TUN_TYPE: u16 = 3;

    /// How often to pick a new name when another program takes ours first.
    const ATTEMPTS: u32 = 8;

    /// Held from choosing a name until the tap exists, so two unikernels starting
    /// at once in this process never choose the same one.
    static NAMING: Mutex<()> = Mutex::new(());

    pub(super) fn create_bridge_hint(bridge: &str) -> String {
        format!("ip link add {bridge} type bridge")
    }

    fn netlink_error(action: String) -> impl FnOnce(io::Error) -> NetError {
        move |why| NetError::Netlink {
            action,
            why: why.to_string(),
        }
    }

    /// Sends one rtnetlink request on a socket of the calling thread's network
    /// namespace and gathers the links in the answer. Every request asks for an
    /// ack, so the answer ends in an ack or error, or in the end of a dump.
    fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<LinkMessage>> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), message.into());
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        socket.send(&bytes, 0)?;
        let mut links = Vec::new();
        loop {
            let (datagram, _) = socket.recv_from_full()?;
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                match reply.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        links.push(link)
                    }
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(error.to_io());
                    }
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(links),
                    _ => {}
                }
                // Messages in a datagram start on 4-byte boundaries.
                let length = (reply.header.length as usize).next_multiple_of(4);
                if length == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "empty netlink message",
                    ));
                }
                rest = rest.get(length..).unwrap_or_default();
            }
        }
    }

    /// The link called `name`, or `None` if there is none.
    fn link(name: &str) -> io::Result<Option<LinkMessage>> {
        let mut get = LinkMessage::default();
        get.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match request(RouteNetlinkMessage::GetLink(get), 0) {
            Ok(links) => Ok(links.into_iter().next()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn all_links() -> Result<Vec<LinkMessage>, NetError> {
        request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )
        .map_err(netlink_error("list the network interfaces".into()))
    }

    fn name(link: &LinkMessage) -> Option<&str> {
        link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.as_str()),
            _ => None,
        })
    }

    fn infos(link: &LinkMessage) -> &[LinkInfo] {
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn is_bridge(link: &LinkMessage) -> bool {
        infos(link).contains(&LinkInfo::Kind(InfoKind::Bridge))
    }

    /// A tun device whose type is IFF_TAP, not IFF_TUN.
    fn is_tap(link: &LinkMessage) -> bool {
        let tap_type = |info: &InfoTun| {
            let InfoTun::Other(nla) = info else {
                return false;
            };
            let mut value = vec![0; nla.value_len()];
            nla.emit_value(&mut value);
            nla.kind() == IFLA_TUN_TYPE && value == [libc::IFF_TAP as u8]
        };
        infos(link).iter().any(|info| match info {
            LinkInfo::Data(InfoData::Tun(tun)) => tun.iter().any(tap_type),
            _ => false,
        })
    }

    pub(super) fn interfaces() -> Result<Vec<String>, NetError> {
        let links = all_links()?;
        Ok(links.iter().filter_map(name).map(str::to_owned).collect())
    }

    pub(super) fn bridges() -> Result<Vec<String>, NetError> {
        let links = all_links()?;
        let bridges = links.iter().filter(|link| is_bridge(link));
        Ok(bridges.filter_map(name).map(str::to_owned).collect())
    }

    pub(super) fn kind(name: &str) -> Result<Kind, NetError> {
        let found = link(name).map_err(netlink_error(format!("look up interface {name}")))?;
        Ok(match found {
            None => Kind::Missing,
            Some(link) if is_tap(&link) => Kind::Tap,
            Some(_) => Kind::Other,
        })
    }

    pub(super) fn traffic(name: &str) -> Result<Option<TapStats>, NetError> {
        let action = || format!("read the traffic counters of {name}");
        let Some(link) = link(name).map_err(netlink_error(action()))? else {
            return Ok(None);
        };
        let counters = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Stats64(counters) => Some(counters),
            _ => None,
        });
        let Some(counters) = counters else {
            return Err(NetError::Netlink {
                action: action(),
                why: "the kernel sent no 64-bit counters".into(),
            });
        };
        Ok(Some(TapStats {
            name: name.to_owned(),
            rx_bytes: counters.rx_bytes,
            rx_packets: counters.rx_packets,
            tx_bytes: counters.tx_bytes,
            tx_packets: counters.tx_packets,
        }))
    }

    /// The smallest N for which `vmmtapN` is not among `names`.
    pub(super) fn free_name(names: &[String]) -> String {
        let taken: BTreeSet<u32> = names
            .iter()
            .filter_map(|name| name.strip_prefix(PREFIX))
            // "vmmtap01" does not hold the name "vmmtap1".
            .filter_map(|n| n.parse::<u32>().ok().filter(|v| v.to_string() == n))
            .collect();
        let n = (0..).find(|n| !taken.contains(n)).unwrap_or(u32::MAX);
        format!("{PREFIX}{n}")
    }

    /// `owner`: the uid that may open the tap without privileges (the tender's).
    pub(super) fn new_tap(owner: Option<u32>, record: Record) -> Result<String, NetError> {
        // The guard protects no data, so a panic elsewhere leaves nothing to repair.
        let _naming = NAMING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..ATTEMPTS {
            let name = free_name(&interfaces()?);
            record(&name).map_err(|why| NetError::Record {
                tap: name.clone(),
                why,
            })?;
            match make_tap(&name, owner) {
                Ok(()) => return Ok(name),
                // Another program (a second fulmar, albatross) took the name
                // after we looked: look again.
                Err(_) if kind(&name)? != Kind::Missing => continue,
                Err(errno) => {
                    return Err(NetError::Tun {
                        tap: name,
                        why: errno.desc().to_owned(),
                    });
                }
            }
        }
        Err(NetError::NoFreeName { attempts: ATTEMPTS })
    }

    // The tun requests of <linux/if_tun.h>, whose numbers libc has. TUNSETIFF
    // reads an ifreq; the others take their argument by value.
    nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_write_int_bad!(tun_set_owner, libc::TUNSETOWNER);
    nix::ioctl_write_int_bad!(tun_set_persist, libc::TUNSETPERSIST);

    /// Makes persistent tap `name`, as `ip tuntap add` does. Until it is made
    /// persistent, closing the descriptor removes it, so a failure leaves
    /// nothing behind.
    fn make_tap(name: &str, owner: Option<u32>) -> nix::Result<()> {
        let tun = nix::fcntl::open(
            "/dev/net/tun",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: ifreq is plain old data, for which all zeroes is valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        // check_name kept the name shorter than ifr_name, so it stays NUL-ended.
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        // IFF_TUN_EXCL: fail on an existing device instead of attaching to it.
        request.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
        let fd = tun.as_raw_fd();
        // SAFETY: fd is an open /dev/net/tun and request a valid ifreq that
        // outlives the call; the kernel only reads it.
        unsafe { tun_set_iff(fd, &request) }?;
        if let Some(uid) = owner {
            // The kernel reads the argument back as a uid_t, so the bits are
            // what matter, not the sign.
            let uid = uid as libc::c_int;
            // SAFETY: fd is now bound to the tap; the argument is a plain uid.
            unsafe { tun_set_owner(fd, uid) }?;
        }
        // SAFETY: as above; the argument is a plain flag.
        unsafe { tun_set_persist(fd, 1) }?;
        Ok(())
    }

    /// One request both attaches and brings the tap up.
    pub(super) fn attach(tap: &str, bridge: &str) -> Result<(), NetError> {
        let failed = || netlink_error(format!("attach {tap} to bridge {bridge}"));
        let master = link(bridge).map_err(failed())?;
        let Some(master) = master.filter(is_bridge) else {
            return Err(failed()(io::Error::other("no such bridge")));
        };
        let mut set = LinkMessage::default();
        set.header.flags = LinkFlags::Up;
        set.header.change_mask = LinkFlags::Up;
        set.attributes = vec![
            LinkAttribute::IfName(tap.to_owned()),
            LinkAttribute::Controller(master.header.index),
        ];
        request(RouteNetlinkMessage::SetLink(set), 0)
            .map(drop)
            .map_err(failed())
    }

    pub(super) fn destroy(tap: &str) -> Result<(), NetError> {
        let mut delete = LinkMessage::default();
        delete
            .attributes
            .push(LinkAttribute::IfName(tap.to_owned()));
        request(RouteNetlinkMessage::DelLink(delete), 0)
            .map(drop)
            .map_err(netlink_error(format!("delete tap {tap}")))
    }
}

#[cfg(target_os = "freebsd")]
use freebsd as os;

#[cfg(target_os = "freebsd")]
mod freebsd {
    use super::{Kind, NetError, Record, TapStats};
    use std::process::{Command, Stdio};

    /// Runs `program` with `args` and returns its standard output; a failure carries
    /// the program's own complaint from standard error.
    fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NetError::Spawn {
                program: program.to_owned(),
                why: e.to_string(),
            })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        Err(NetError::Failed {
            command: std::iter::once(program)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            why: if stderr.is_empty() {
                output.status.to_string()
            } else {
                stderr.replace('\n', "; ")
            },
        })
    }

    pub(super) fn create_bridge_hint(bridge: &str) -> String {
        format!("ifconfig bridge create name {bridge}")
    }

    /// Interfaces in ifconfig group `group` ("bridge", "tap"), or all with `None`.
    fn interfaces(group: Option<&str>) -> Result<Vec<String>, NetError> {
        let out = match group {
            Some(group) => run("ifconfig", &["-g", group])?,
            None => run("ifconfig", &["-l"])?,
        };
        Ok(out.split_whitespace().map(str::to_owned).collect())
    }

    pub(super) fn bridges() -> Result<Vec<String>, NetError> {
        interfaces(Some("bridge"))
    }

    pub(super) fn kind(name: &str) -> Result<Kind, NetError> {
        let has = |names: Vec<String>| names.iter().any(|n| n == name);
        if !has(interfaces(None)?) {
            return Ok(Kind::Missing);
        }
        Ok(if has(interfaces(Some("tap"))?) {
            Kind::Tap
        } else {
            Kind::Other
        })
    }

    /// The kernel picks the name and prints it, so there is nothing to race
    /// for, and the name can only be recorded once the tap exists. devfs, not
    /// the interface, decides who may open `/dev/tapN`: the operator's
    /// devfs.rules give it to the tender user (docs/operations.md).
    pub(super) fn new_tap(_owner: Option<u32>, record: Record) -> Result<String, NetError> {
        let name = run("ifconfig", &["tap", "create"])?.trim().to_owned();
        if name.is_empty() {
            return Err(NetError::Failed {
                command: "ifconfig tap create".into(),
                why: "it printed no interface name".into(),
            });
        }
        if let Err(why) = record(&name) {
            let _ = destroy(&name);
            return Err(NetError::Record { tap: name, why });
        }
        Ok(name)
    }

    pub(super) fn attach(tap: &str, bridge: &str) -> Result<(), NetError> {
        run("ifconfig", &[bridge, "addm", tap])?;
        run("ifconfig", &[tap, "up"]).map(drop)
    }

    pub(super) fn destroy(tap: &str) -> Result<(), NetError> {
        run("ifconfig", &[tap, "destroy"]).map(drop)
    }

    /// From netstat's structured output, one entry per address of the
    /// interface; the link-level entry carries the counters.
    pub(super) fn traffic(name: &str) -> Result<Option<TapStats>, NetError> {
        if !interfaces(None)?.iter().any(|n| n == name) {
            return Ok(None);
        }
        let args = ["--libxo", "json", "-I", name, "-b", "-n"];
        let out = run("netstat", &args)?;
        let unreadable = |why: &str| NetError::Failed {
            command: format!("netstat {}", args.join(" ")),
            why: format!("{why}; please report this FreeBSD version's output"),
        };
        let json: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| unreadable(&e.to_string()))?;
        let entries = json["statistics"]["interface"].as_array();
        let link = entries
            .into_iter()
            .flatten()
            .find(|entry| entry["received-bytes"].is_u64())
            .ok_or_else(|| unreadable("no entry with counters"))?;
        let counter = |key: &str| link[key].as_u64().ok_or_else(|| unreadable(key));
        Ok(Some(TapStats {
            name: name.to_owned(),
            rx_bytes: counter("received-bytes")?,
            rx_packets: counter("received-packets")?,
            tx_bytes: counter("sent-bytes")?,
            tx_packets: counter("sent-packets")?,
        }))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::host::netns::{self, bridge, ip};
    use std::collections::BTreeSet;

    fn unrecorded(_: &str) -> Result<(), String> {
        Ok(())
    }

    /// Where Linux shows the interfaces of the namespace that mounted sysfs:
    /// the tests look there to check what netlink did.
    fn sysfs_dir(name: &str) -> std::path::PathBuf {
        std::path::Path::new("/sys/class/net").join(name)
    }

    fn sysfs(name: &str, attribute: &str) -> Option<String> {
        std::fs::read_to_string(sysfs_dir(name).join(attribute))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn is_up(name: &str) -> bool {
        let flags = sysfs(name, "flags").unwrap();
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
        flags & libc::IFF_UP as u32 != 0
    }

    fn master(name: &str) -> Option<String> {
        let link = std::fs::read_link(sysfs_dir(name).join("master")).ok()?;
        Some(link.file_name()?.to_str()?.to_owned())
    }

    fn taps() -> BTreeSet<String> {
        linux::interfaces()
            .unwrap()
            .into_iter()
            .filter(|n| tap_exists(n).unwrap())
            .collect()
    }

    #[test]
    fn free_name_takes_the_smallest_gap() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(linux::free_name(&names(&["lo", "eth0"])), "vmmtap0");
        assert_eq!(linux::free_name(&names(&["vmmtap0", "vmmtap2"])), "vmmtap1");
        assert_eq!(
            linux::free_name(&names(&["vmmtap01", "vmmtapx", "vmmtap0"])),
            "vmmtap1"
        );
    }

    #[test]
    fn names_that_leave_sysfs_are_refused() {
        for bad in ["", ".", "..", "../eth0", "a b", "x:1", "sixteen-chars-xx"] {
            assert!(
                matches!(check_name(bad), Err(NetError::BadName { .. })),
                "{bad:?}"
            );
        }
        check_name("vmmtap0").unwrap();
        assert!(matches!(delete_tap("../lo"), Err(NetError::BadName { .. })));
    }

    #[test]
    fn a_missing_bridge_is_named_with_the_alternatives() {
        let error = NetError::NoBridge {
            bridge: "br9".into(),
            available: vec!["br0".into(), "br1".into()],
        };
        assert_eq!(
            error.to_string(),
            "bridge br9 does not exist: create it (ip link add br9 type bridge) or use one of: br0, br1"
        );
    }

    #[test]
    fn lists_bridges_only() {
        let found = netns::run(|| {
            assert_eq!(bridges().unwrap(), Vec::<String>::new());
            bridge("br1");
            bridge("br0");
            ip(&[
                "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ]);
            bridges().unwrap()
        });
        if let Some(found) = found {
            assert_eq!(found, ["br0", "br1"]);
        }
    }

    #[test]
    fn creates_taps_with_the_smallest_free_name() {
        netns::run(|| {
            bridge("br0");
            let first = create_tap("br0", None, &mut unrecorded).unwrap();
            let second = create_tap("br0", None, &mut unrecorded).unwrap();
            assert_eq!(
                (first.name.as_str(), second.name.as_str()),
                ("vmmtap0", "vmmtap1")
            );
            assert_eq!(first.bridge, "br0");
            for tap in [&first, &second] {
                assert!(tap_exists(&tap.name).unwrap());
                assert!(is_up(&tap.name), "{} is down", tap.name);
                assert_eq!(master(&tap.name).as_deref(), Some("br0"));
            }
            delete_tap("vmmtap0").unwrap();
            assert!(!tap_exists("vmmtap0").unwrap());
            assert_eq!(
                create_tap("br0", None, &mut unrecorded).unwrap().name,
                "vmmtap0"
            );
            assert_eq!(
                create_tap("br0", None, &mut unrecorded).unwrap().name,
                "vmmtap2"
            );
        });
    }

    #[test]
    fn every_tap_is_recorded_before_it_exists_and_an_unrecorded_one_is_not_made() {
        netns::run(|| {
            bridge("br0");
            let mut seen = Vec::new();
            let mut record = |name: &str| {
                assert!(
                    !tap_exists(name).unwrap(),
                    "{name} was made before its record"
                );
                seen.push(name.to_owned());
                Ok(())
            };
            let tap = create_tap("br0", None, &mut record).unwrap();
            assert_eq!(seen, std::slice::from_ref(&tap.name));
            let refused = create_tap("br0", None, &mut |_| Err("disk full".into()));
            assert!(
                matches!(refused, Err(NetError::Record { .. })),
                "{refused:?}"
            );
            assert_eq!(taps(), BTreeSet::from([tap.name]));
        });
    }

    #[test]
    fn an_unknown_bridge_leaves_no_tap() {
        netns::run(|| {
            bridge("br0");
            ip(&[
                "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ]);
            for bridge in ["br9", "veth0"] {
                match create_tap(bridge, None, &mut unrecorded) {
                    Err(NetError::NoBridge {
                        bridge: b,
                        available,
                    }) => {
                        assert_eq!(b, bridge);
                        assert_eq!(available, ["br0"]);
                    }
                    other => panic!("{bridge}: {other:?}"),
                }
            }
            assert_eq!(taps(), BTreeSet::new());
        });
    }

    #[test]
    fn a_failed_attach_deletes_the_new_tap() {
        netns::run(|| {
            // As if the bridge had vanished or changed after the check.
            ip(&[
                "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ]);
            for bridge in ["veth0", "gone"] {
                match attach_new_tap(bridge, None, &mut unrecorded) {
                    Err(NetError::Netlink { action, .. }) => {
                        assert!(action.contains(bridge), "{action}")
                    }
                    other => panic!("{bridge}: {other:?}"),
                }
                assert_eq!(taps(), BTreeSet::new());
            }
        });
    }

    #[test]
    fn delete_tap_tolerates_absence_and_refuses_other_interfaces() {
        netns::run(|| {
            bridge("br0");
            ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
            delete_tap("vmmtap7").unwrap();
            for other in ["br0", "lo", "tun0"] {
                assert!(
                    matches!(delete_tap(other), Err(NetError::NotATap { .. })),
                    "{other}"
                );
                assert!(!tap_exists(other).unwrap());
            }
            assert_eq!(bridges().unwrap(), ["br0"]);
            let tap = create_tap("br0", None, &mut unrecorded).unwrap();
            delete_tap(&tap.name).unwrap();
            assert!(sysfs(&tap.name, "flags").is_none());
            delete_tap(&tap.name).unwrap();
        });
    }

    /// sysfs shows the interfaces of the namespace that mounted it, so a daemon
    /// in a container given the host's /sys used to see the host's bridges.
    #[test]
    fn a_namespace_showing_another_sysfs_still_sees_its_own_interfaces() {
        netns::run(|| {
            bridge("brns0");
            // Uncovers the sysfs of the namespace the test came from.
            nix::mount::umount2("/sys", nix::mount::MntFlags::MNT_DETACH).unwrap();
            assert_eq!(bridges().unwrap(), ["brns0"]);
            let tap = create_tap("brns0", None, &mut unrecorded).unwrap();
            assert!(tap_exists(&tap.name).unwrap());
            assert!(!sysfs_dir(&tap.name).exists(), "sysfs is still ours");
            let traffic = traffic(&tap.name).unwrap().expect("the tap's counters");
            assert_eq!(traffic.name, tap.name);
            delete_tap(&tap.name).unwrap();
            assert!(!tap_exists(&tap.name).unwrap());
        });
    }

    /// Set in the child process of [`taps_are_made_without_ip_for_their_owner`].
    const WITHOUT_PATH: &str = "FULMAR_TEST_NET_WITHOUT_PATH";

    /// The test reruns itself in a child whose PATH is empty: there fulmar
    /// finds no `ip` to fork, while the namespace helper gets its own by path.
    #[test]
    fn taps_are_made_without_ip_for_their_owner() {
        if std::env::var_os(WITHOUT_PATH).is_some() {
            netns::run(|| {
                bridge("br0");
                let tap = create_tap("br0", Some(4242), &mut unrecorded).unwrap();
                assert_eq!(sysfs(&tap.name, "owner").as_deref(), Some("4242"));
                assert_eq!(master(&tap.name).as_deref(), Some("br0"));
                delete_tap(&tap.name).unwrap();
                assert!(!tap_exists(&tap.name).unwrap());
            });
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: making taps needs root");
            return;
        }
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "host::net::tests::taps_are_made_without_ip_for_their_owner",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("PATH", "")
            .env(WITHOUT_PATH, "1")
            .env(netns::IP_PROGRAM, netns::ip_program())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&child.stdout);
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(
            child.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{stderr}"
        );
    }

    #[test]
    fn concurrent_creates_get_distinct_names() {
        const THREADS: usize = 6;
        netns::run(|| {
            bridge("br0");
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    std::thread::spawn(|| create_tap("br0", None, &mut unrecorded).unwrap().name)
                })
                .collect();
            let names: BTreeSet<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let expected: BTreeSet<String> = (0..THREADS).map(|n| format!("vmmtap{n}")).collect();
            assert_eq!(names, expected);
            assert_eq!(taps(), expected);
        });
    }
}
