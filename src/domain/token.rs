//! Token formats: auth keys (`ena_`), session tokens (`ens_`), generated admin tokens
//! (`enadm_`) and scoped admin tokens (`ent_`). Generating (OS CSPRNG), checksumming, parsing, hashing and hinting. No I/O.
//!
//! A token is `prefix + 30 random base62 characters + 6-character base62 CRC32 of the random
//! part`, the scheme GitHub uses, so a typo or a truncated paste is caught without a database
//! lookup and secret scanners can recognise our tokens by shape.

use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
use std::fmt;

const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
pub(crate) const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The kinds of secret authkeys issues; each has its own prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    AuthKey,
    Session,
    Admin,
    /// A scoped admin token created by root (`POST /v1/admin-tokens`).
    ScopedAdmin,
}

impl TokenKind {
    pub(crate) const ALL: [TokenKind; 4] = [
        TokenKind::AuthKey,
        TokenKind::Session,
        TokenKind::Admin,
        TokenKind::ScopedAdmin,
    ];

    pub(crate) fn prefix(self) -> &'static str {
        match self {
            TokenKind::AuthKey => "ena_",
            TokenKind::Session => "ens_",
            TokenKind::Admin => "enadm_",
            TokenKind::ScopedAdmin => "ent_",
        }
    }
}

/// A secret held in memory. `Debug` and `Display` are redacted so it cannot end up in a log
/// line by accident; `expose` is the one deliberate way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// SHA-256 of a token: the only form in which a secret is stored or compared.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub(crate) fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<TokenHash> {
        bytes.try_into().ok().map(TokenHash)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// Why a string is not a well-formed token of the expected kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Prefix,
    Length,
    Characters,
    Checksum,
}

/// Generates a fresh token of `kind` from the OS CSPRNG.
pub(crate) fn generate(kind: TokenKind) -> Secret {
    let random = random_base62(RANDOM_LEN);
    let checksum = checksum(&random);
    Secret(format!("{}{random}{checksum}", kind.prefix()))
}

/// Checks the shape and checksum of `token` and returns its hash. Pure: no lookup happens
/// here, so a mistyped token costs nothing but this function.
pub(crate) fn parse(kind: TokenKind, token: &str) -> Result<TokenHash, Malformed> {
    let body = token.strip_prefix(kind.prefix()).ok_or(Malformed::Prefix)?;
    if body.len() != BODY_LEN {
        return Err(Malformed::Length);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Malformed::Characters);
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    if checksum(random) != sum {
        return Err(Malformed::Checksum);
    }
    Ok(TokenHash::of(token))
}

/// The display hint kept beside the hash: prefix, first four and last four characters.
pub(crate) fn hint(token: &Secret) -> String {
    let full = token.expose();
    let prefix_len = TokenKind::ALL
        .iter()
        .map(|kind| kind.prefix())
        .find(|prefix| full.starts_with(prefix))
        .map_or(0, str::len);
    let body = &full[prefix_len..];
    let first: String = body.chars().take(4).collect();
    let last: String = body
        .chars()
        .skip(body.chars().count().saturating_sub(4))
        .collect();
    format!("{}{first}…{last}", &full[..prefix_len])
}

/// A random opaque identifier such as `key_3kTq…`: not secret, but unguessable so that ids
/// reveal nothing about how many rows exist.
pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", random_base62(20))
}

/// A webhook's signing secret, `whsec_` + 40 base62 characters (about 238 bits) from the OS
/// CSPRNG. Stored as it is (the server signs with it), shown once.
pub(crate) fn webhook_secret() -> Secret {
    Secret(format!("whsec_{}", random_base62(40)))
}

/// Replaces anything shaped like one of our tokens in `text` with its prefix and an ellipsis.
/// Applied to every error message and log line that may quote client input.
pub(crate) fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for kind in TokenKind::ALL {
            let prefix = kind.prefix();
            if let Some(after) = rest.strip_prefix(prefix) {
                let secret_len = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
                if secret_len > 0 {
                    out.push_str(prefix);
                    out.push('…');
                    rest = &after[secret_len..];
                    continue 'scan;
                }
            }
        }
        let next = rest.chars().next().expect("rest is not empty");
        out.push(next);
        rest = &rest[next.len_utf8()..];
    }
    out
}

/// Path segments longer than this are never logged: every token and every configured admin
/// token (at least 32 characters) is longer, whatever its format.
pub(crate) const MAX_LOGGED_SEGMENT_CHARS: usize = 24;

/// A request path as it may be logged. A segment is replaced by `…` when it is longer than
/// `MAX_LOGGED_SEGMENT_CHARS`, or when, percent-decoded, it holds anything shaped like one of
/// our tokens (`%65na_…` is `ena_…`). Other segments are logged as they came, still encoded,
/// so that decoding cannot put a control character into the log.
pub(crate) fn redact_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            let too_long = segment.chars().count() > MAX_LOGGED_SEGMENT_CHARS;
            if too_long || redact_secrets(&decoded) != decoded {
                "…"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    // One read from the OS CSPRNG covers a whole token almost always (64 bytes, 3% rejected).
    let mut bytes = [0u8; 64];
    while out.len() < len {
        SysRng
            .try_fill_bytes(&mut bytes)
            .expect("the OS random number generator is unavailable");
        // 248 = 4 × 62: bytes below it map uniformly onto base62; the others are discarded.
        let digits = bytes.iter().filter(|&&byte| byte < 248);
        for &byte in digits.take(len - out.len()) {
            out.push(char::from(BASE62[usize::from(byte % 62)]));
        }
    }
    out
}

fn checksum(random: &str) -> String {
    let mut value = crc32fast::hash(random.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("base62 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_have_the_documented_shape() {
        for kind in TokenKind::ALL {
            let token = generate(kind);
            let text = token.expose();
            assert!(text.starts_with(kind.prefix()));
            assert_eq!(text.len(), kind.prefix().len() + 36);
            assert_eq!(parse(kind, text), Ok(TokenHash::of(text)));
        }
    }

    #[test]
    fn rejects_bad_shapes_before_any_lookup() {
        let good = generate(TokenKind::AuthKey).expose().to_string();
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        let cases = [
            (good.replace("ena_", "ens_"), Malformed::Prefix),
            (format!("{good}x"), Malformed::Length),
            (good[..good.len() - 1].to_string(), Malformed::Length),
            (
                format!("{}-{}", &good[..10], &good[11..]),
                Malformed::Characters,
            ),
            (flipped, Malformed::Checksum),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(TokenKind::AuthKey, &input), Err(expected), "{input}");
        }
    }

    #[test]
    fn checksum_matches_an_independent_crc32_base62() {
        // Vector computed outside Rust (Python's zlib.crc32, base62 0-9A-Za-z, 6 digits).
        let valid = "ena_nEQIkfeM43t7oxpleMsIULbhbtLAbY3rdP12";
        assert_eq!(parse(TokenKind::AuthKey, valid), Ok(TokenHash::of(valid)));
        // API.md's example is illustrative: same random part, made-up checksum.
        let example = "ena_nEQIkfeM43t7oxpleMsIULbhbtLAbYnnLf1D";
        assert_eq!(parse(TokenKind::AuthKey, example), Err(Malformed::Checksum));
    }

    #[test]
    fn hint_shows_prefix_and_four_characters_each_side() {
        let token = Secret::new("ena_nEQIkfeM43t7oxpleMsIULbhbtLAbYnnLf1D".into());
        assert_eq!(hint(&token), "ena_nEQI…Lf1D");
    }

    #[test]
    fn redaction_hides_every_token_shape() {
        let key = generate(TokenKind::AuthKey);
        let session = generate(TokenKind::Session);
        let text = format!("bad {} and {}; ena_ alone", key.expose(), session.expose());
        assert_eq!(redact_secrets(&text), "bad ena_… and ens_…; ena_ alone");
        assert_eq!(redact_secrets("näive ünïcode"), "näive ünïcode");
    }

    #[test]
    fn logged_paths_hide_long_segments_and_tokens_however_encoded() {
        let key = generate(TokenKind::AuthKey);
        let key = key.expose();
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        for (path, logged) in [
            ("/v1/apps/my-app/keys", "/v1/apps/my-app/keys"),
            (&format!("/v1/apps/{key}"), "/v1/apps/…"),
            (&format!("/v1/apps/%65na_{}", &key[4..]), "/v1/apps/…"),
            (&format!("/v1/apps/{encoded}/keys"), "/v1/apps/…/keys"),
            // Short, but a token's prefix once decoded: not logged either.
            ("/v1/apps/%65na_x", "/v1/apps/…"),
            ("/v1/apps/enadm_x", "/v1/apps/…"),
            // Any secret at all, if it is long: a configured admin token, say.
            ("/v1/apps/test-admin-token-0123456789abcd", "/v1/apps/…"),
            ("/abcdefghijklmnopqrstuvwx", "/abcdefghijklmnopqrstuvwx"),
            ("/abcdefghijklmnopqrstuvwxy", "/…"),
            // Encoded bytes stay encoded: a decoded newline would forge a log line.
            ("/v1/apps/a%0Ab", "/v1/apps/a%0Ab"),
            ("/", "/"),
            ("", ""),
        ] {
            assert_eq!(redact_path(path), logged, "{path}");
        }
    }

    #[test]
    fn random_characters_cover_base62_evenly() {
        let mut counts = [0u32; 62];
        for _ in 0..2000 {
            for byte in random_base62(31).bytes() {
                let index = BASE62
                    .iter()
                    .position(|&c| c == byte)
                    .expect("a base62 digit");
                counts[index] += 1;
            }
        }
        // 62,000 draws: each digit expects 1000; a biased mapping would miss this by far.
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let token = generate(TokenKind::Admin);
        assert_eq!(format!("{token:?}"), "Secret(…)");
    }
}
