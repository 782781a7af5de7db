//! IPv4 and IPv6 addresses, with the grammar checks that keep version numbers and timestamps intact.

use super::*;

pub(super) fn ipv4_at(b: &[u8], p: usize) -> Option<Hit> {
    let mut q = p;
    let mut first = 0;
    let mut any = 0;
    for octet in 0..4 {
        let start = q;
        let mut value = 0u32;
        while q < b.len() && b[q].is_ascii_digit() && q - start < 3 {
            value = value * 10 + u32::from(b[q] - b'0');
            q += 1;
        }
        if q == start || value > 255 || (q < b.len() && b[q].is_ascii_digit()) {
            return None;
        }
        if octet == 0 {
            first = value;
        }
        any |= value;
        if octet < 3 {
            if q >= b.len() || b[q] != b'.' {
                return None;
            }
            q += 1;
        }
    }
    let trailing_dot_digit = q + 1 < b.len() && b[q] == b'.' && b[q + 1].is_ascii_digit();
    // Loopback (`127.x.x.x`) and unspecified (`0.0.0.0`) addresses point at no one: listen addresses stay.
    if (q < b.len() && is_alnum(b[q])) || trailing_dot_digit || first == 127 || any == 0 {
        return None;
    }
    Some(Hit {
        start: p,
        end: q,
        detector: Detector::Ipv4,
    })
}

/// The IPv6 address in the run of hex digits, colons and dots around the `:` at `j`, and where that run ends.
// Kept out of the scan loop: it runs before the pairs loop, and inlined there it cost clean text 3 %.
#[inline(never)]
pub(super) fn ipv6_around(b: &[u8], j: usize) -> (Option<Hit>, usize) {
    let start = run_start(&NOT_IPV6, b, 0, j);
    let k = first_in(&NOT_IPV6, b, j);
    let mut end = k;
    while end > start && b[end - 1] == b'.' {
        end -= 1;
    }
    let word = |c: u8| is_alnum(c) || c == b'_';
    // Most runs are parts of longer words (`T10:30:00`, `profile:12345`): rejected before any counting.
    if (start > 0 && word(b[start - 1])) || (k < b.len() && word(b[k])) {
        return (None, k);
    }
    let candidate = &b[start..end];
    // A run of a few hex words (`be:ef::ad`) is an address only with a digit or four groups.
    let address = ipv6_groups(candidate).is_some_and(|(groups, written)| {
        (written >= 4 || candidate.iter().any(u8::is_ascii_digit))
            // Loopback and unspecified addresses (`::1`, `::`) point at no one: listen addresses stay.
            && (groups[..7] != [0; 7] || groups[7] > 1)
    });
    let hit = address.then_some(Hit {
        start,
        end,
        detector: Detector::Ipv6,
    });
    (hit, k)
}

/// The eight groups of the IPv6 address `text`, and how many groups it writes out (an IPv4 part counts as
/// four), accepting exactly what `std::net::Ipv6Addr`'s parser accepts (hex groups of one to four digits, one
/// `::` standing for at least one zero group, an IPv4 address in the last two groups) without its UTF-8 check,
/// atomic reads and error values: it runs on every address-shaped run in the text.
pub(crate) fn ipv6_groups(text: &[u8]) -> Option<([u16; 8], usize)> {
    // Without a dot there is no IPv4 part to try at each group: one pass over the groups and colons.
    if !text.contains(&b'.') {
        return hex_groups(text);
    }
    dotted_groups(text).map(|groups| (groups, 4))
}

/// [`ipv6_groups`] of an address that may end in an IPv4 part, as the standard library reads it: an IPv4 part
/// is tried at every group.
pub(super) fn dotted_groups(text: &[u8]) -> Option<[u16; 8]> {
    /// A number in `radix` of one to `max_digits` digits starting at `*at`, moving `*at` past it.
    fn number(
        text: &[u8],
        at: &mut usize,
        radix: u32,
        max_digits: usize,
        zero_prefix: bool,
    ) -> Option<u32> {
        let start = *at;
        let mut value = 0u32;
        while let Some(digit) = text.get(*at).and_then(|&c| char::from(c).to_digit(radix)) {
            value = value * radix + digit;
            *at += 1;
            if *at - start > max_digits {
                return None;
            }
        }
        let digits = *at - start;
        (digits > 0 && (zero_prefix || digits == 1 || text[start] != b'0')).then_some(value)
    }
    /// An IPv4 address starting at `*at` (decimal octets, no leading zeros), moving `*at` past it.
    fn ipv4(text: &[u8], at: &mut usize) -> Option<[u16; 2]> {
        let mut octets = [0u16; 4];
        for (i, octet) in octets.iter_mut().enumerate() {
            if i > 0 {
                (text.get(*at) == Some(&b'.')).then_some(())?;
                *at += 1;
            }
            *octet = number(text, at, 10, 3, false).filter(|&v| v <= 255)? as u16;
        }
        Some([octets[0] << 8 | octets[1], octets[2] << 8 | octets[3]])
    }
    /// Groups separated by `:` into `groups`, from `*at`; how many, and whether the last was an IPv4 address.
    /// A separator and group that do not parse are not consumed.
    fn read_groups(text: &[u8], at: &mut usize, groups: &mut [u16]) -> (usize, bool) {
        let limit = groups.len();
        for i in 0..limit {
            let mark = *at;
            let separated = |at: &mut usize| {
                if i == 0 {
                    return true;
                }
                let colon = text.get(*at) == Some(&b':');
                *at += usize::from(colon);
                colon
            };
            if i + 1 < limit {
                if separated(at)
                    && let Some([high, low]) = ipv4(text, at)
                {
                    groups[i] = high;
                    groups[i + 1] = low;
                    return (i + 2, true);
                }
                *at = mark;
            }
            match separated(at)
                .then(|| number(text, at, 16, 4, true))
                .flatten()
            {
                Some(group) => groups[i] = group as u16,
                None => {
                    *at = mark;
                    return (i, false);
                }
            }
        }
        (limit, false)
    }
    let mut at = 0;
    let mut head = [0u16; 8];
    let (head_size, head_ipv4) = read_groups(text, &mut at, &mut head);
    if head_size == 8 {
        return (at == text.len()).then_some(head);
    }
    if head_ipv4 || !text[at..].starts_with(b"::") {
        return None;
    }
    at += 2;
    // `::` stands for at least one zero group.
    let mut tail = [0u16; 7];
    let limit = 8 - (head_size + 1);
    let (tail_size, _) = read_groups(text, &mut at, &mut tail[..limit]);
    if at != text.len() {
        return None;
    }
    head[8 - tail_size..].copy_from_slice(&tail[..tail_size]);
    Some(head)
}

/// [`ipv6_groups`] of an address without an IPv4 part: hex groups of one to four digits between single
/// colons, eight of them, or at most seven with one `::` among them.
pub(super) fn hex_groups(text: &[u8]) -> Option<([u16; 8], usize)> {
    let mut groups = [0u16; 8];
    let (mut count, mut gap, mut at) = (0, None, 0);
    if text.starts_with(b"::") {
        gap = Some(0);
        at = 2;
    }
    while at < text.len() {
        let start = at;
        let mut value = 0u32;
        while let Some(digit) = text.get(at).and_then(|&c| char::from(c).to_digit(16)) {
            value = value << 4 | digit;
            at += 1;
        }
        if !(1..=4).contains(&(at - start)) || count == 8 {
            return None;
        }
        groups[count] = value as u16;
        count += 1;
        if at == text.len() {
            break;
        }
        if text[at] != b':' || at + 1 == text.len() {
            // Not a colon, or a single colon at the end.
            return None;
        }
        at += 1;
        if text[at] == b':' {
            if gap.is_some() {
                return None;
            }
            gap = Some(count);
            at += 1;
        }
    }
    match gap {
        None => (count == 8).then_some((groups, count)),
        Some(gap) if count <= 7 => {
            // The groups after `::` go to the end.
            let tail = count - gap;
            groups.copy_within(gap..count, 8 - tail);
            groups[gap..8 - tail].fill(0);
            Some((groups, count))
        }
        Some(_) => None,
    }
}
