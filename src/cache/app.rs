//! Apps by pk, for session lookups: a whoami that misses the hot cache reads the machine row
//! only, and takes its app (and the app's JSON, encoded once) from here.
//!
//! Nothing here is ever invalidated, because no entry can become wrong: an app row never
//! changes once written (there is no rename; deletion only sets `deleted_at`), its pk is never
//! reused (rows are kept as tombstones), and deleting an app deletes its machines in the same
//! transaction, so no session can lead to a deleted app.

use super::Encoded;
use crate::domain::error::Result;
use crate::domain::model::App;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, PoisonError, RwLock};

/// Apps held at most. Past it, further apps are read from the database on each session miss.
pub(crate) const CAPACITY: usize = 1024;

/// An app, with the HTTP layer's encoding of it made once and shared by every whoami answer.
#[derive(Debug, Default)]
pub(crate) struct CachedApp {
    pub(crate) app: App,
    pub(crate) encoded: Encoded<Box<RawValue>>,
}

impl Deref for CachedApp {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

#[derive(Default)]
pub(crate) struct AppCache {
    apps: RwLock<HashMap<i64, Arc<CachedApp>>>,
}

impl AppCache {
    /// The app with this pk, from memory or else from `load` (which is then remembered).
    pub(crate) fn get_or_load(
        &self,
        pk: i64,
        load: impl FnOnce() -> Result<Option<App>>,
    ) -> Result<Option<Arc<CachedApp>>> {
        let cached = self
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&pk)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(app) = load()? else {
            return Ok(None);
        };
        let app = Arc::new(CachedApp {
            app,
            encoded: Encoded::default(),
        });
        let mut apps = self.apps.write().unwrap_or_else(PoisonError::into_inner);
        if apps.len() < CAPACITY {
            apps.insert(pk, Arc::clone(&app));
        }
        Ok(Some(app))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Timestamp;
    use std::cell::Cell;

    fn app(pk: i64) -> App {
        App {
            pk,
            id: format!("app{pk}"),
            name: "App".into(),
            created_at: Timestamp(pk),
        }
    }

    #[test]
    fn loads_each_app_once_and_stays_bounded() {
        let cache = AppCache::default();
        let loads = Cell::new(0);
        let get = |pk: i64| {
            cache
                .get_or_load(pk, || {
                    loads.set(loads.get() + 1);
                    Ok((pk > 0).then(|| app(pk)))
                })
                .unwrap()
        };
        assert_eq!(get(1).unwrap().id, "app1");
        assert_eq!(get(1).unwrap().id, "app1");
        assert_eq!(loads.get(), 1);
        // An app that is not there is not remembered as missing.
        assert!(get(-1).is_none());
        assert!(get(-1).is_none());
        assert_eq!(loads.get(), 3);
        for pk in 2..=CAPACITY as i64 + 10 {
            assert_eq!(get(pk).unwrap().pk, pk);
        }
        assert_eq!(cache.apps.read().unwrap().len(), CAPACITY);
        let before = loads.get();
        assert_eq!(get(CAPACITY as i64 + 5).unwrap().pk, CAPACITY as i64 + 5);
        assert_eq!(loads.get(), before + 1, "beyond capacity, read each time");
    }
}
