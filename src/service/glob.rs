//! Redis glob patterns (`PSUBSCRIBE`), matched on event names.
//!
//! The syntax is Redis's: `*` any run of bytes (empty too), `?` one byte, `[abc]` one of the
//! bytes, `[a-z]` a range (either order), `[^a]` any byte but those; `\x` the byte `x` itself
//! (inside a class too). A `[` without its `]` takes the rest of the pattern as its class,
//! and a trailing `\` matches a `\`, both as Redis does. Two corners differ on purpose from
//! Redis's matcher, which is quirky there: a class item `x-` right before `]` is the bytes `x`
//! and `-` (Redis reads a range up to `]` and runs on past it), and `\` escapes either end of
//! a range.
//!
//! The matcher is iterative: one pass over the name, remembering only the last `*` to fall
//! back to, so it takes at most `O(pattern × name)` steps and no stack, whatever the pattern
//! (`a*a*a*a*…b` cannot blow up). It is greedy-with-backtrack, which is exact for globs
//! because `*` is their only token of variable length: when a later `*` matches, no earlier
//! `*` needs to give back what it took.

/// One token of a pattern, found at a position of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// `*`
    Star,
    /// `?`
    One,
    /// A literal byte (plain, or escaped with `\`).
    Byte(u8),
    /// `[...]`: the class body's range in the pattern, and whether it starts with `^`.
    Class { body: (usize, usize), negated: bool },
}

/// The token starting at `i` (which must be inside `pattern`), and where the next starts.
fn token_at(pattern: &[u8], i: usize) -> (Token, usize) {
    match pattern.get(i).copied() {
        Some(b'*') => (Token::Star, i + 1),
        Some(b'?') => (Token::One, i + 1),
        Some(b'\\') => match pattern.get(i + 1) {
            Some(&b) => (Token::Byte(b), i + 2),
            None => (Token::Byte(b'\\'), i + 1),
        },
        Some(b'[') => {
            let mut start = i + 1;
            let negated = pattern.get(start) == Some(&b'^');
            if negated {
                start += 1;
            }
            // The body ends at the first `]` not escaped by `\`; without one, at the end.
            let mut j = start;
            while j < pattern.len() && pattern[j] != b']' {
                j += if pattern[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(pattern.len());
            (
                Token::Class {
                    body: (start, end),
                    negated,
                },
                (end + 1).min(pattern.len()),
            )
        }
        Some(b) => (Token::Byte(b), i + 1),
        None => (Token::Byte(0), i + 1),
    }
}

/// Whether `b` is in the class body `body` (`a`, `a-z`, `\]` items).
fn class_contains(body: &[u8], b: u8) -> bool {
    let mut k = 0;
    while k < body.len() {
        let mut lo = body[k];
        if lo == b'\\' && k + 1 < body.len() {
            k += 1;
            lo = body[k];
        }
        // A range `lo-hi`: the `-` must be followed by its upper end.
        if body.get(k + 1) == Some(&b'-') && k + 2 < body.len() {
            let mut hi = body[k + 2];
            k += 2;
            if hi == b'\\' && k + 1 < body.len() {
                k += 1;
                hi = body[k];
            }
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            if (lo..=hi).contains(&b) {
                return true;
            }
        } else if lo == b {
            return true;
        }
        k += 1;
    }
    false
}

/// Whether token `t` matches the single byte `b` (`*` never gets here).
fn matches_byte(pattern: &[u8], t: Token, b: u8) -> bool {
    match t {
        Token::Star => true,
        Token::One => true,
        Token::Byte(p) => p == b,
        Token::Class { body, negated } => {
            let body = pattern.get(body.0..body.1).unwrap_or_default();
            class_contains(body, b) != negated
        }
    }
}

/// Whether `name` matches the Redis glob `pattern`.
///
/// ```text
/// product.*      product.changed   yes
/// product.*      order.created     no
/// cache.[ab]*    cache.b.x         yes
/// ```
pub(crate) fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // After the last `*` seen: where the pattern resumes, and the name position it was
    // tried at (the star has taken `name[star_at..n]`).
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            let (t, next) = token_at(pattern, p);
            if t == Token::Star {
                star = Some((next, n));
                p = next;
                continue;
            }
            if matches_byte(pattern, t, name[n]) {
                p = next;
                n += 1;
                continue;
            }
        }
        // Mismatch (or the pattern ran out): let the last star take one more byte.
        match star {
            Some((after, at)) => {
                star = Some((after, at + 1));
                p = after;
                n = at + 1;
            }
            None => return false,
        }
    }
    // The name is used up: what is left of the pattern must be stars only.
    while p < pattern.len() {
        let (t, next) = token_at(pattern, p);
        if t != Token::Star {
            return false;
        }
        p = next;
    }
    true
}

/// Whether a pattern has no special bytes at all, so it matches one name only (itself).
#[cfg(test)]
fn is_literal(pattern: &[u8]) -> bool {
    !pattern.iter().any(|b| b"*?[\\".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(pattern: &str, name: &str, expected: bool) {
        assert_eq!(
            matches(pattern.as_bytes(), name.as_bytes()),
            expected,
            "{pattern:?} on {name:?}"
        );
    }

    #[test]
    fn the_redis_glob_syntax() {
        for (pattern, name, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("product.*", "product.changed", true),
            ("product.*", "product.", true),
            ("product.*", "order.created", false),
            ("product.*", "product", false),
            ("cache.[ab]*", "cache.a", true),
            ("cache.[ab]*", "cache.b.x", true),
            ("cache.[ab]*", "cache.c", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("[\\]]", "]", true),
            ("[a\\-z]", "-", true),
            ("[a\\-z]", "b", false),
            ("[a-]", "-", true),
            ("ab\\", "ab\\", true),
            ("[abc", "b", true),
            ("[abc", "d", false),
            ("[]", "x", false),
            ("*.*.*", "a.b.c", true),
            ("*.*.*", "a.b", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("", "", true),
            ("", "a", false),
            ("**", "", true),
        ] {
            check(pattern, name, expected);
        }
    }

    #[test]
    fn a_hostile_pattern_takes_no_stack_and_ends() {
        let pattern = "a*".repeat(512) + "b";
        let name = "a".repeat(1024);
        assert!(!matches(pattern.as_bytes(), name.as_bytes()));
        assert!(matches(b"[[[[[[[[[[[", b"["));
    }

    /// A slow, obviously right matcher to compare with: dynamic programming over whole
    /// tokens.
    fn reference(pattern: &[u8], name: &[u8]) -> bool {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            let (t, next) = token_at(pattern, i);
            tokens.push(t);
            i = next;
        }
        // ok[j]: the tokens so far match name[..j].
        let mut ok = vec![false; name.len() + 1];
        ok[0] = true;
        for t in tokens {
            let mut next = vec![false; name.len() + 1];
            for j in 0..=name.len() {
                if t == Token::Star {
                    next[j] = ok[..=j].iter().any(|&b| b);
                } else if j > 0 {
                    next[j] = ok[j - 1] && matches_byte(pattern, t, name[j - 1]);
                }
            }
            ok = next;
        }
        ok[name.len()]
    }

    fn glob_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(b"ab*?[]^-\\.".to_vec()), 0..12)
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(
            pattern in glob_bytes(),
            name in prop::collection::vec(prop::sample::select(b"ab.-]^[*?\\".to_vec()), 0..12),
        ) {
            prop_assert_eq!(matches(&pattern, &name), reference(&pattern, &name));
        }

        #[test]
        fn arbitrary_bytes_never_panic(pattern in any::<Vec<u8>>(), name in any::<Vec<u8>>()) {
            let _ = matches(&pattern, &name);
        }

        #[test]
        fn star_around_a_literal_finds_it(
            pre in "[a-z.]{0,8}", lit in "[a-z.]{0,8}", post in "[a-z.]{0,8}",
        ) {
            let pattern = format!("*{lit}*");
            let name = format!("{pre}{lit}{post}");
            prop_assert!(is_literal(lit.as_bytes()));
            prop_assert!(matches(pattern.as_bytes(), name.as_bytes()));
            prop_assert!(matches(lit.as_bytes(), lit.as_bytes()));
        }
    }
}
