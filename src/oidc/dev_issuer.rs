//! `DevIssuer`: a local OIDC issuer for trying trust policies out (`authkeys dev-oidc-issuer`)
//! and for the tests. It serves a discovery document and a JWKS with one RS256 and one ES256
//! key (rotation publishes new ones and keeps the previous ones, as real issuers do), mints
//! tokens shaped like GitHub Actions' (`repository`, `repository_owner`, `ref`, `sub` =
//! `repo:OWNER/REPO:ref:REF`), and answers like the Actions token endpoint:
//! `GET /token?audience=A` with `Authorization: Bearer <request token>` → `{"value": JWT}`.
//! Keys come from `rsa` and `p256`, signatures and JWKs from `jsonwebtoken`.

use crate::domain::error::StartError;
use crate::domain::token;
use crate::http::{Listener, Request, Response};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::Generate;
use p256::pkcs8::EncodePrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The signing algorithms the issuer has a key for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevAlg {
    RS256,
    ES256,
}

/// What the token endpoint puts in the tokens it mints.
#[derive(Debug, Clone)]
pub struct DevClaims {
    /// `OWNER/REPO`.
    pub repository: String,
    /// Such as `refs/heads/main`.
    pub git_ref: String,
    /// Seconds from `iat` to `exp` (GitHub's are about 5 minutes).
    pub lifetime_secs: i64,
}

impl Default for DevClaims {
    fn default() -> DevClaims {
        DevClaims {
            repository: "acme/api".into(),
            git_ref: "refs/heads/main".into(),
            lifetime_secs: 300,
        }
    }
}

struct SigningKey {
    kid: String,
    alg: DevAlg,
    encoding: EncodingKey,
    jwk: Jwk,
}

struct State {
    url: String,
    request_token: String,
    defaults: DevClaims,
    /// The newest key of each algorithm last; the JWKS publishes the last four.
    keys: Mutex<Vec<SigningKey>>,
    /// JWKS requests answered, so tests can see when a verifier refetches.
    jwks_served: AtomicUsize,
}

/// A running issuer; it stops when dropped.
pub struct DevIssuer {
    state: Arc<State>,
    _listener: Listener,
}

/// Keys kept published after rotations (two per rotation).
const PUBLISHED_KEYS: usize = 4;

impl DevIssuer {
    /// Starts an issuer on `listen` (such as `127.0.0.1:0`) whose token endpoint mints
    /// tokens with `defaults`.
    pub fn start(listen: &str, defaults: DevClaims) -> Result<DevIssuer, StartError> {
        let keys = vec![
            SigningKey::generate(DevAlg::RS256)?,
            SigningKey::generate(DevAlg::ES256)?,
        ];
        // The URL is known once the listener is bound: the handler reads it from the state.
        let slot: Arc<Mutex<Option<Arc<State>>>> = Arc::new(Mutex::new(None));
        let handler_slot = Arc::clone(&slot);
        let listener = Listener::start(
            listen,
            Arc::new(move |request: &Request| {
                let state = handler_slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match state {
                    Some(state) => state.handle(request),
                    None => Response::json(503, &json!({"error": "starting"})),
                }
            }),
            2,
        )?;
        let state = Arc::new(State {
            url: format!("http://{}", listener.address()),
            request_token: token::random_id("dev_"),
            defaults,
            keys: Mutex::new(keys),
            jwks_served: AtomicUsize::new(0),
        });
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&state));
        Ok(DevIssuer {
            state,
            _listener: listener,
        })
    }

    /// The issuer (`iss`), `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.state.url
    }

    /// The bearer token the token endpoint (`<url>/token`) asks for, like
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn request_token(&self) -> &str {
        &self.state.request_token
    }

    /// Publishes a new key of each algorithm and signs with it from now on; the previous
    /// keys stay published.
    pub fn rotate(&self) -> Result<(), StartError> {
        let fresh = [
            SigningKey::generate(DevAlg::RS256)?,
            SigningKey::generate(DevAlg::ES256)?,
        ];
        let mut keys = self
            .state
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        keys.extend(fresh);
        let excess = keys.len().saturating_sub(PUBLISHED_KEYS);
        keys.drain(..excess);
        Ok(())
    }

    /// The claims GitHub Actions would put in a token for `audience`, issued now.
    pub fn claims(&self, audience: &str) -> Value {
        self.state.claims(audience)
    }

    /// `claims` signed with the current key of `alg`.
    pub fn mint(&self, alg: DevAlg, claims: &Value) -> String {
        self.state.mint(alg, None, claims)
    }

    /// `claims` signed with the current key of `alg`, its header naming `kid` instead.
    pub fn mint_with_kid(&self, alg: DevAlg, kid: &str, claims: &Value) -> String {
        self.state.mint(alg, Some(kid), claims)
    }

    /// How many times the JWKS has been served.
    pub fn jwks_served(&self) -> usize {
        self.state.jwks_served.load(Ordering::SeqCst)
    }

    /// The `kid` of the current key of `alg`.
    pub fn current_kid(&self, alg: DevAlg) -> String {
        let keys = self
            .state
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = keys
            .iter()
            .rev()
            .find(|key| key.alg == alg)
            .expect("a key per algorithm");
        key.kid.clone()
    }
}

impl State {
    fn handle(&self, request: &Request) -> Response {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => Response::json(
                200,
                &json!({
                    "issuer": self.url,
                    "jwks_uri": format!("{}/.well-known/jwks", self.url),
                    "subject_types_supported": ["public"],
                    "response_types_supported": ["id_token"],
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf",
                                         "ref", "repository", "repository_owner"],
                }),
            ),
            ("GET", "/.well-known/jwks") => {
                self.jwks_served.fetch_add(1, Ordering::SeqCst);
                let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
                let set = JwkSet {
                    keys: keys.iter().map(|key| key.jwk.clone()).collect(),
                };
                Response::json(200, &set)
            }
            ("GET", "/token") => self.actions_token(request),
            ("GET", _) => Response::json(404, &json!({"message": "not found"})),
            _ => Response::json(405, &json!({"message": "method not allowed"})),
        }
    }

    /// Like GitHub's `ACTIONS_ID_TOKEN_REQUEST_URL`: the request token as bearer, the
    /// audience as a query parameter.
    fn actions_token(&self, request: &Request) -> Response {
        let expected = format!("Bearer {}", self.request_token);
        if request.authorization.as_deref() != Some(expected.as_str()) {
            return Response::json(401, &json!({"message": "bad request token"}));
        }
        let audience = form_urlencoded::parse(request.query.as_bytes())
            .find(|(name, _)| name == "audience")
            .map(|(_, value)| value.into_owned());
        let Some(audience) = audience.filter(|audience| !audience.is_empty()) else {
            return Response::json(400, &json!({"message": "audience is required"}));
        };
        let token = self.mint(DevAlg::RS256, None, &self.claims(&audience));
        Response::json(200, &json!({"count": 1, "value": token}))
    }

    fn claims(&self, audience: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        let DevClaims {
            repository,
            git_ref,
            lifetime_secs,
        } = &self.defaults;
        let owner = repository.split('/').next().unwrap_or(repository);
        json!({
            "iss": self.url,
            "aud": audience,
            "sub": format!("repo:{repository}:ref:{git_ref}"),
            "jti": token::random_id(""),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_secs,
            "repository": repository,
            "repository_owner": owner,
            "ref": git_ref,
            "ref_type": if git_ref.starts_with("refs/tags/") { "tag" } else { "branch" },
            "event_name": "push",
            "workflow": "ci",
            "runner_environment": "self-hosted",
        })
    }

    fn mint(&self, alg: DevAlg, kid: Option<&str>, claims: &Value) -> String {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let key = keys
            .iter()
            .rev()
            .find(|key| key.alg == alg)
            .expect("a key per algorithm");
        let mut header = Header::new(key.alg.algorithm());
        header.kid = Some(kid.unwrap_or(&key.kid).to_string());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("our keys and claims encode")
    }
}

impl DevAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            DevAlg::RS256 => Algorithm::RS256,
            DevAlg::ES256 => Algorithm::ES256,
        }
    }
}

impl SigningKey {
    fn generate(alg: DevAlg) -> Result<SigningKey, StartError> {
        let failed =
            |err: &dyn std::fmt::Display| StartError::new(format!("generating a key: {err}"));
        let mut rng = rand::rng();
        let encoding = match alg {
            DevAlg::RS256 => {
                let key = rsa::PrivateKey::new(&mut rng, 2048).map_err(|e| failed(&e))?;
                let der = key.to_pkcs1_der().map_err(|e| failed(&e))?;
                EncodingKey::from_rsa_der(der.as_bytes())
            }
            DevAlg::ES256 => {
                let key = p256::SecretKey::generate_from_rng(&mut rng);
                let der = key.to_pkcs8_der().map_err(|e| failed(&e))?;
                EncodingKey::from_ec_der(der.as_bytes())
            }
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg.algorithm()).map_err(|e| failed(&e))?;
        let kid = token::random_id("dev-");
        jwk.common.key_id = Some(kid.clone());
        Ok(SigningKey {
            kid,
            alg,
            encoding,
            jwk,
        })
    }
}
