//! Finding our tokens in any text: source files, logs, a diff, a URL's query string. Pure (the
//! CLI's `authkeys scan` reads the files). A candidate is a prefix (`ena_`, `ens_`, `enadm_`)
//! followed by exactly 36 base62 characters; it is reported only if `token::parse` accepts it,
//! so a look-alike with a wrong checksum never is. The prefixes are found with `memchr`'s SIMD
//! substring search, so text without tokens costs about what `grep -c ena_` costs.

use super::token::{self, Secret, TokenKind};
use memchr::memmem::Finder;

/// The longest token (`enadm_` and 36 characters): a caller reading text in chunks keeps this
/// many bytes minus one from the end of a chunk for the next, so no token is split unseen.
pub const MAX_TOKEN_LEN: usize = 6 + token::BODY_LEN;

/// One well-formed token found in a text.
#[derive(Debug)]
pub struct Found {
    pub kind: TokenKind,
    /// Byte offset of the token's first character in the text searched.
    pub offset: usize,
    pub token: Secret,
}

impl Found {
    /// What may be shown of the token: its prefix and four characters each side.
    pub fn hint(&self) -> String {
        token::hint(&self.token)
    }
}

/// Searches texts for tokens; build it once and reuse it (the searchers are precomputed).
pub struct TokenFinder {
    finders: Vec<(TokenKind, Finder<'static>)>,
}

impl Default for TokenFinder {
    fn default() -> TokenFinder {
        TokenFinder {
            finders: TokenKind::ALL
                .iter()
                .map(|&kind| (kind, Finder::new(kind.prefix().as_bytes())))
                .collect(),
        }
    }
}

impl TokenFinder {
    /// Every checksum-valid token in `text`, by offset. A token must not run on into more
    /// base62 characters: `ena_` and 37 of them is some other string, not our key.
    pub fn find(&self, text: &[u8]) -> Vec<Found> {
        let mut found = Vec::new();
        for (kind, finder) in &self.finders {
            for offset in finder.find_iter(text) {
                let end = offset + kind.prefix().len() + token::BODY_LEN;
                let Some(candidate) = text.get(offset..end) else {
                    break;
                };
                if text.get(end).is_some_and(u8::is_ascii_alphanumeric) {
                    continue;
                }
                let Ok(candidate) = std::str::from_utf8(candidate) else {
                    continue;
                };
                if token::parse(*kind, candidate).is_ok() {
                    found.push(Found {
                        kind: *kind,
                        offset,
                        token: Secret::new(candidate.to_string()),
                    });
                }
            }
        }
        found.sort_by_key(|found| found.offset);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_offsets(text: &str) -> Vec<(TokenKind, usize)> {
        TokenFinder::default()
            .find(text.as_bytes())
            .iter()
            .map(|found| (found.kind, found.offset))
            .collect()
    }

    #[test]
    fn finds_every_kind_embedded_in_any_text() {
        let key = token::generate(TokenKind::AuthKey);
        let session = token::generate(TokenKind::Session);
        let admin = token::generate(TokenKind::Admin);
        let (key, session, admin) = (key.expose(), session.expose(), admin.expose());
        let text =
            format!("let k = \"{key}\";\nurl = https://x.test/?token={session}&a=1\n{admin}");
        let found = TokenFinder::default().find(text.as_bytes());
        let tokens: Vec<&str> = found.iter().map(|f| f.token.expose()).collect();
        assert_eq!(tokens, [key, session, admin]);
        assert_eq!(found[0].offset, text.find(key).unwrap());
        assert_eq!(
            found[0].hint(),
            format!("ena_{}…{}", &key[4..8], &key[36..])
        );
    }

    #[test]
    fn never_reports_a_look_alike() {
        let key = token::generate(TokenKind::AuthKey).expose().to_string();
        let mut wrong_checksum = key.clone().into_bytes();
        let last = wrong_checksum.len() - 1;
        wrong_checksum[last] = if wrong_checksum[last] == b'a' {
            b'b'
        } else {
            b'a'
        };
        let wrong_checksum = String::from_utf8(wrong_checksum).unwrap();
        for text in [
            wrong_checksum.clone(),
            format!("{key}x"),
            format!("{key}0"),
            key[..key.len() - 1].to_string(),
            key.replace("ena_", "enb_"),
            key.replace("ena_", "ena-"),
            "ena_nEQIkfeM43t7oxpleMsIULbhbtLAbYnnLf1D".to_string(),
            "ena_".to_string(),
            String::new(),
        ] {
            assert_eq!(kinds_and_offsets(&text), [], "{text}");
        }
        // The one with a good checksum beside them is still found.
        let text = format!("{wrong_checksum} {key}.");
        assert_eq!(
            kinds_and_offsets(&text),
            [(TokenKind::AuthKey, wrong_checksum.len() + 1)]
        );
    }

    #[test]
    fn a_token_at_the_very_end_or_between_non_ascii_is_found() {
        let key = token::generate(TokenKind::AuthKey).expose().to_string();
        assert_eq!(kinds_and_offsets(&key), [(TokenKind::AuthKey, 0)]);
        let text = format!("é«{key}»\u{0}");
        assert_eq!(kinds_and_offsets(&text), [(TokenKind::AuthKey, 4)]);
    }
}
