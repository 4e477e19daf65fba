//! Which addresses the store may name: the configured allowlist, checked on canonical addresses,
//! and the ranges refused whatever the list says (metadata endpoints, and IPv6 forms that carry
//! an IPv4 address past the IPv4 rules).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Which addresses the store is allowed to name.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// Entries written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) become the IPv4 range they
    /// name, since the addresses they are compared with have been canonicalized the same way.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        let allowed = allowed.into_iter().map(canonical_net).collect();
        AddressPolicy { allowed }
    }

    /// An IPv4-mapped address is judged as the IPv4 address it reaches, so `::/0` cannot let
    /// in what the IPv4 entries leave out. The always-refused ranges (link-local and metadata,
    /// IPv4-embedding IPv6 forms, multicast, unspecified, broadcast) are refused whatever the
    /// list says; the rest must be inside an allowed range.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        refusal(ip).is_none() && self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// The always-refused range that holds all of an allowlist entry, which then admits nothing.
pub fn dead_entry(net: IpNet) -> Option<IpNet> {
    let net = canonical_net(net);
    if net.contains(&V6_LOOPBACK) {
        return None;
    }
    always_refused().find(|range| range.contains(&net))
}

/// The always-refused range an address lies in. The address must already be canonical.
/// Checked on every routed request, so each family is checked against its own ranges only.
fn refusal(ip: IpAddr) -> Option<IpNet> {
    match ip {
        IpAddr::V4(v4) => REFUSED_V4
            .iter()
            .find(|r| r.contains(&v4))
            .map(|r| IpNet::V4(*r)),
        // `::1` lies inside `::/96` but embeds no IPv4 address: it is loopback, which (like
        // 127.0.0.0/8) only a listed range lets in.
        IpAddr::V6(v6) if v6 == Ipv6Addr::LOCALHOST => None,
        IpAddr::V6(v6) => REFUSED_V6
            .iter()
            .find(|r| r.contains(&v6))
            .map(|r| IpNet::V6(*r)),
    }
}

/// Every always-refused range, of both families.
fn always_refused() -> impl Iterator<Item = IpNet> {
    let v4 = REFUSED_V4.into_iter().map(IpNet::V4);
    v4.chain(REFUSED_V6.into_iter().map(IpNet::V6))
}

/// An IPv6 range inside `::ffff:0:0/96` as the IPv4 range it maps; any other range unchanged.
fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else { return net };
    let mapped = v6
        .prefix_len()
        .checked_sub(96)
        .zip(v6.network().to_ipv4_mapped());
    mapped
        .and_then(|(len, v4)| Ipv4Net::new(v4, len).ok())
        .map_or(net, IpNet::V4)
}

const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Ranges no store entry may send the router into, listed or not. The IPv6 forms that embed
/// an IPv4 address are refused whole: a tunnel or translator would carry the connection to
/// that IPv4 address (metadata, loopback) without it passing the IPv4 rules, and no container
/// is addressed that way. IPv4-mapped addresses need no entry: they are canonicalized first.
const REFUSED_V4: [Ipv4Net; 4] = [
    // This network (RFC 791), with the unspecified 0.0.0.0, which Linux connects to loopback.
    v4([0, 0, 0, 0], 8),
    // Link-local: instance metadata, ECS task metadata, the VPC's DNS and NTP.
    v4([169, 254, 0, 0], 16),
    v4([224, 0, 0, 0], 4),
    v4([255, 255, 255, 255], 32),
];

/// The always-refused IPv6 ranges; see [`REFUSED_V4`].
const REFUSED_V6: [Ipv6Net; 10] = [
    // Unspecified, listed before the range that holds it so it is named as itself.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    // IPv4-compatible `::a.b.c.d` (deprecated, RFC 4291), except `::1` (see `refusal`).
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
    // IPv4-translated `::ffff:0:a.b.c.d` (SIIT, RFC 2765).
    v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
    // NAT64 well-known and local-use prefixes (RFC 6052, RFC 8215).
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    // Teredo and 6to4, whose addresses carry IPv4 servers, relays or clients.
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
    // AWS's IPv6 metadata (::254), DNS (::253) and NTP (::123) on Nitro instances.
    v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0], 32),
];

const fn v4(o: [u8; 4], len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(o[0], o[1], o[2], o[3]), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    let addr = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    Ipv6Net::new_assert(addr, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nets: &[&str]) -> AddressPolicy {
        AddressPolicy::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    const PRIVATE_V4: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
    const EVERYTHING: [&str; 2] = ["0.0.0.0/0", "::/0"];

    fn refused_by(p: &AddressPolicy, ips: &[&str]) {
        for ip in ips {
            assert!(!p.permits(ip.parse().unwrap()), "{ip} permitted");
        }
    }

    fn permitted_by(p: &AddressPolicy, ips: &[&str]) {
        for ip in ips {
            assert!(p.permits(ip.parse().unwrap()), "{ip} refused");
        }
    }

    #[test]
    fn private_ranges_only_by_default_list() {
        let p = policy(&PRIVATE_V4);
        permitted_by(&p, &["10.1.2.3", "172.16.0.9", "192.168.1.1"]);
        refused_by(&p, &["127.0.0.1", "8.8.8.8", "fd12::1"]);
    }

    #[test]
    fn metadata_and_special_addresses_are_never_allowed() {
        let p = policy(&EVERYTHING);
        refused_by(
            &p,
            &[
                "169.254.169.254",
                "169.254.170.2",
                "0.0.0.0",
                "0.1.2.3",
                "224.0.0.1",
                "255.255.255.255",
                "fe80::1",
                "ff02::1",
                "::",
            ],
        );
        permitted_by(&p, &["127.0.0.1", "::1", "8.8.8.8"]);
    }

    #[test]
    fn mapped_loopback_is_refused_when_only_private_v4_is_listed() {
        let loopback = ["::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:127.1.2.3"];
        refused_by(&policy(&PRIVATE_V4), &loopback);
        // `::/0` is an IPv6 range: it no longer reaches IPv4 through the mapped form.
        let with_any_v6: Vec<&str> = PRIVATE_V4.iter().copied().chain(["::/0"]).collect();
        refused_by(&policy(&with_any_v6), &loopback);
        permitted_by(&policy(&["127.0.0.0/8"]), &loopback);
    }

    #[test]
    fn mapped_addresses_follow_the_ipv4_rules() {
        permitted_by(
            &policy(&PRIVATE_V4),
            &["::ffff:10.1.2.3", "::ffff:c0a8:101"],
        );
        refused_by(&policy(&PRIVATE_V4), &["::ffff:8.8.8.8"]);
        refused_by(
            &policy(&EVERYTHING),
            &[
                "::ffff:0.0.0.0",
                "::ffff:0.1.2.3",
                "::ffff:169.254.169.254",
                "::ffff:a9fe:a9fe",
                "::ffff:224.0.0.1",
                "::ffff:255.255.255.255",
            ],
        );
    }

    #[test]
    fn ipv4_embedding_forms_are_refused_even_when_listed() {
        let listed = [
            "0.0.0.0/0",
            "::/0",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "2002::/16",
            "2001::/32",
        ];
        refused_by(
            &policy(&listed),
            &[
                "64:ff9b::a9fe:a9fe",
                "64:ff9b::7f00:1",
                "64:ff9b::a01:203",
                "64:ff9b:1::a9fe:a9fe",
                "64:ff9b:1:ffff::7f00:1",
                "2002:a9fe:a9fe::1",
                "2002:7f00:1::1",
                "2002:a01:203::1",
                "2001:0:a9fe:a9fe::1",
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                "::a9fe:a9fe",
                "::127.0.0.1",
                "::10.1.2.3",
                "::ffff:0:a9fe:a9fe",
                "::ffff:0:7f00:1",
            ],
        );
    }

    #[test]
    fn aws_ipv6_metadata_dns_and_ntp_are_refused_even_when_listed() {
        let aws = ["fd00:ec2::254", "fd00:ec2::253", "fd00:ec2::123"];
        for listed in [
            ["fc00::/7"],
            ["::/0"],
            ["fd00:ec2::/32"],
            ["fd00:ec2::254/128"],
        ] {
            refused_by(&policy(&listed), &aws);
        }
        permitted_by(&policy(&["fc00::/7"]), &["fd12::1", "fd00:ec3::254"]);
    }

    #[test]
    fn ordinary_addresses_still_pass() {
        permitted_by(&policy(&PRIVATE_V4), &["10.1.2.3"]);
        permitted_by(&policy(&["fc00::/7"]), &["fd12::1"]);
        permitted_by(&policy(&["2600:1f18::/32"]), &["2600:1f18:1:2::3"]);
        permitted_by(&policy(&["::1/128", "127.0.0.0/8"]), &["::1", "127.0.0.1"]);
        refused_by(&policy(&["fc00::/7"]), &["::1", "10.1.2.3", "2600:1f18::1"]);
    }

    #[test]
    fn mapped_entries_name_ipv4_ranges() {
        let p = policy(&["::ffff:10.0.0.0/104"]);
        permitted_by(&p, &["10.1.2.3", "::ffff:10.1.2.3"]);
        refused_by(&p, &["11.0.0.1", "::ffff:11.0.0.1"]);
        let p = policy(&["::ffff:0:0/96"]);
        permitted_by(&p, &["8.8.8.8", "::ffff:8.8.8.8", "127.0.0.1"]);
        refused_by(
            &p,
            &[
                "169.254.169.254",
                "::ffff:169.254.169.254",
                "::ffff:0.0.0.0",
            ],
        );
    }

    #[test]
    fn entries_inside_refused_ranges_are_dead() {
        for dead in [
            "169.254.0.0/16",
            "169.254.169.254/32",
            "0.0.0.0/8",
            "::ffff:169.254.0.0/112",
            "fe80::/10",
            "fd00:ec2::/32",
            "fd00:ec2::254/128",
            "64:ff9b::/96",
            "2002::/16",
            "2001::/32",
            "::/128",
        ] {
            assert!(dead_entry(dead.parse().unwrap()).is_some(), "{dead}");
        }
        for live in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "::/0",
            "fc00::/7",
            "::ffff:0:0/96",
            "::1/128",
            "127.0.0.0/8",
        ] {
            assert_eq!(dead_entry(live.parse().unwrap()), None, "{live}");
        }
    }

    #[test]
    fn default_list_admits_no_metadata_endpoint() {
        let defaults = crate::config::UpstreamSection::default().allowed_cidrs;
        let names: Vec<&str> = defaults.iter().map(String::as_str).collect();
        refused_by(
            &policy(&names),
            &[
                "169.254.169.254",
                "fd00:ec2::254",
                "::ffff:169.254.169.254",
                "64:ff9b::a9fe:a9fe",
                "127.0.0.1",
                "::ffff:127.0.0.1",
            ],
        );
        permitted_by(&policy(&names), &["10.1.2.3", "::ffff:10.1.2.3"]);
    }
}
