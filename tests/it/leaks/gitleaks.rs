//! `examples/gitleaks.toml`: its two rules, read as gitleaks reads them and applied with the
//! `regex` crate (RE2 syntax and semantics, as gitleaks' Go regexp; gitleaks itself is not in
//! Debian's packages). The ids give the types GitLab sends; each rule finds its tokens where
//! `authkeys scan` does, and the secret it reports (`secretGroup`) is exactly the token.

use authkeys::TokenKind;
use authkeys::ops::generate_token;
use regex::Regex;

struct Rule {
    regex: Regex,
    secret_group: usize,
    keywords: Vec<String>,
}

fn rule(id: &str) -> Rule {
    let config: toml::Table = include_str!("../../../examples/gitleaks.toml")
        .parse()
        .expect("gitleaks.toml is TOML");
    let rules = config["rules"].as_array().expect("[[rules]]");
    let rule = rules
        .iter()
        .find(|rule| rule["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("no rule {id}"));
    Rule {
        regex: Regex::new(rule["regex"].as_str().expect("regex")).expect("a valid regex"),
        secret_group: rule["secretGroup"].as_integer().expect("secretGroup") as usize,
        keywords: rule["keywords"]
            .as_array()
            .expect("keywords")
            .iter()
            .map(|k| k.as_str().expect("a keyword").to_string())
            .collect(),
    }
}

impl Rule {
    /// The secrets gitleaks would report in `text` (a keyword must occur first, as gitleaks
    /// filters fragments by keyword before it runs a rule's regex).
    fn secrets(&self, text: &str) -> Vec<String> {
        if !self
            .keywords
            .iter()
            .any(|k| text.to_lowercase().contains(k))
        {
            return Vec::new();
        }
        self.regex
            .captures_iter(text)
            .map(|caps| caps[self.secret_group].to_string())
            .collect()
    }
}

#[test]
fn each_rule_finds_its_tokens_in_any_text_and_reports_exactly_them() {
    for (id, kind, other) in [
        ("authkeys_auth_key", TokenKind::AuthKey, TokenKind::Session),
        (
            "authkeys_session_token",
            TokenKind::Session,
            TokenKind::AuthKey,
        ),
    ] {
        let rule = rule(id);
        let token = generate_token(kind).expose().to_string();
        let not_this_kind = generate_token(other).expose().to_string();
        for text in [
            token.clone(),
            format!("const KEY = \"{token}\";"),
            format!("https://x.test/login?token={token}&v=1"),
            format!("export A={token}\nexport B={not_this_kind}"),
            format!("KEY_{token}"),
        ] {
            assert_eq!(rule.secrets(&text), vec![token.clone()], "{id}: {text}");
        }
        for text in [
            format!("{token}x"),
            token[..token.len() - 1].to_string(),
            not_this_kind.clone(),
            "ena_ and ens_ alone".to_string(),
        ] {
            assert_eq!(rule.secrets(&text), Vec::<String>::new(), "{id}: {text}");
        }
    }
}
