//! MAC addresses of unikernel network interfaces.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A 48-bit Ethernet address, shown as `00:80:41:cd:8a:eb`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a MAC address: write six two-digit hex bytes separated by ':', e.g. 00:80:41:cd:8a:eb"
)]
pub struct MacError(String);

impl Mac {
    /// The address albatross gives interface `interface` of unikernel `unikernel`
    /// when none is configured: `00:80:41` followed by the first three bytes of
    /// MD5(interface ":" unikernel). Keeping the rule keeps DHCP reservations valid
    /// when a host moves from albatross.
    pub fn derived(interface: &str, unikernel: &str) -> Mac {
        let digest = Md5::new()
            .chain_update(interface.as_bytes())
            .chain_update(b":")
            .chain_update(unikernel.as_bytes())
            .finalize();
        Mac([0x00, 0x80, 0x41, digest[0], digest[1], digest[2]])
    }

    /// Why an interface may not use this address, if it may not. A group
    /// address (the low bit of the first octet, which includes the broadcast
    /// ff:ff:ff:ff:ff:ff) would make every frame sent to it a flood to the
    /// bridge, and the all-zero address is no station's.
    pub fn unusable(&self) -> Option<&'static str> {
        if self.0[0] & 0x01 != 0 {
            Some("a broadcast or multicast address")
        } else if self.0 == [0; 6] {
            Some("the all-zero address")
        } else {
            None
        }
    }
}

impl std::str::FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Mac, MacError> {
        let bad = || MacError(s.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(bytes))
    }
}

impl TryFrom<String> for Mac {
    type Error = MacError;
    fn try_from(s: String) -> Result<Mac, MacError> {
        s.parse()
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_albatross_address() {
        // An address Solo5's own derivation gives for this pair, so fulmar's
        // derived MACs match the ones other Solo5 tooling hands out.
        assert_eq!(
            Mac::derived("service", "hello").to_string(),
            "00:80:41:cd:8a:eb"
        );
        assert_ne!(
            Mac::derived("service", "hello2"),
            Mac::derived("service", "hello")
        );
    }

    #[test]
    fn parses_and_prints() {
        let mac: Mac = "02:AB:cd:00:01:ff".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0xab, 0xcd, 0x00, 0x01, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:cd:00:01:ff");
    }

    #[test]
    fn group_and_zero_addresses_are_unusable() {
        for bad in [
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "33:33:00:00:00:01",
            "03:00:00:00:00:01",
        ] {
            let mac: Mac = bad.parse().unwrap();
            assert!(mac.unusable().is_some(), "{bad} was usable");
        }
        assert!(
            "00:00:00:00:00:00"
                .parse::<Mac>()
                .unwrap()
                .unusable()
                .is_some()
        );
        for good in ["02:ab:cd:00:01:ff", "00:80:41:cd:8a:eb"] {
            assert_eq!(good.parse::<Mac>().unwrap().unusable(), None);
        }
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "02:ab:cd:00:01",
            "02:ab:cd:00:01:ff:00",
            "2:ab:cd:00:01:ff",
            "zz:ab:cd:00:01:ff",
            "02-ab-cd-00-01-ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad} was accepted");
        }
    }
}
