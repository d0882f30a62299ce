//! Pages of a list: how many rows a client asks for (`limit`), where the page starts (the
//! opaque `cursor`), and the page handed back. Lists are walked by keyset, never by OFFSET:
//! a cursor names the last row of the previous page in the list's stable, unique order, so a
//! walk returns every row that exists throughout it exactly once, whatever is added or
//! removed meanwhile, and every page is one index range scan however deep it is.

use crate::domain::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub(crate) const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Longer than any cursor this server writes (an app id is at most 63 characters).
const MAX_CURSOR_CHARS: usize = 512;

/// The last row of a page, in its list's order. Which variant a cursor holds says which list
/// it came from, so a cursor passed to another list is refused rather than misread. The row
/// keys (`pk`) it carries leave the process only inside this opaque encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) enum Position {
    /// Apps by id (the live ones are unique by id).
    App { id: String },
    /// Keys newest first: by `created_at`, then row, both descending.
    Key { created_at: i64, pk: i64 },
    /// Machines newest first: by row, descending (rows are numbered in insertion order).
    Machine { pk: i64 },
    /// Audit events by `seq`, ascending.
    Event { seq: i64 },
    /// Admin tokens newest first: by row, descending.
    AdminToken { pk: i64 },
    /// Webhooks newest first: by row, descending.
    Webhook { pk: i64 },
    /// A webhook's deliveries by `seq`, descending (newest first).
    Delivery { seq: i64 },
}

impl Position {
    /// The cursor text: hex of the position's JSON. Opaque to clients, who pass it back as it is.
    pub(crate) fn encode(&self) -> String {
        hex::encode(serde_json::to_vec(self).expect("a position always serialises"))
    }

    fn decode(cursor: &str) -> Result<Position> {
        let bytes = (cursor.len() <= MAX_CURSOR_CHARS)
            .then(|| hex::decode(cursor).ok())
            .flatten();
        bytes
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(bad_cursor)
    }
}

fn bad_cursor() -> Error {
    Error::InvalidField {
        field: "cursor",
        reason: "is not a cursor of this list: pass back a `next_cursor` unchanged".into(),
    }
}

/// What a client asked for: at most `limit` rows, after `after` (the first page if `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PageRequest {
    pub(crate) limit: usize,
    after: Option<Position>,
}

impl Default for PageRequest {
    fn default() -> PageRequest {
        PageRequest {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// From the query's `limit` and `cursor` values (each given at most once).
    pub(crate) fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| Error::InvalidField {
                    field: "limit",
                    reason: format!("must be a whole number from 1 to {MAX_LIMIT}"),
                })?,
        };
        let after = cursor.map(Position::decode).transpose()?;
        Ok(PageRequest { limit, after })
    }

    /// The first page of `limit` rows (for the tests).
    #[cfg(test)]
    fn first(limit: usize) -> PageRequest {
        PageRequest { limit, after: None }
    }

    /// Where to resume, if this list's `of_this_list` recognises the cursor's position;
    /// `None` on the first page. A cursor of another list is refused.
    pub(crate) fn resume<T>(
        &self,
        of_this_list: impl FnOnce(&Position) -> Option<T>,
    ) -> Result<Option<T>> {
        self.after
            .as_ref()
            .map(|after| of_this_list(after).ok_or_else(bad_cursor))
            .transpose()
    }

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub(crate) fn fetch(&self) -> i64 {
        self.limit as i64 + 1
    }
}

/// One page of a list, and where the next one starts (`None` on the last page).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next: Option<Position>,
}

/// The empty, last page.
impl<T> Default for Page<T> {
    fn default() -> Page<T> {
        Page {
            items: Vec::new(),
            next: None,
        }
    }
}

impl<T> Page<T> {
    /// Cuts `rows`, fetched with `request.fetch()`, to the page: a row beyond the limit means
    /// another page follows, starting after the page's last row.
    pub(crate) fn from_rows(
        mut rows: Vec<T>,
        request: &PageRequest,
        position: impl Fn(&T) -> Position,
    ) -> Page<T> {
        let more = rows.len() > request.limit;
        rows.truncate(request.limit);
        let next = more.then(|| rows.last().map(position)).flatten();
        Page { items: rows, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_are_checked() {
        fn field<T: std::fmt::Debug>(result: Result<T>) -> &'static str {
            match result {
                Err(Error::InvalidField { field, .. }) => field,
                other => panic!("expected a refused field, got {other:?}"),
            }
        }
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, 100);
        assert_eq!(PageRequest::parse(Some("1000"), None).unwrap().limit, 1000);
        assert_eq!(PageRequest::parse(Some("1"), None).unwrap().limit, 1);
        for bad in [
            "0",
            "1001",
            "-1",
            "",
            "ten",
            "1.5",
            "99999999999999999999999",
        ] {
            assert_eq!(
                field(PageRequest::parse(Some(bad), None)),
                "limit",
                "{bad:?}"
            );
        }
        let cursor = Position::Key {
            created_at: 5,
            pk: 7,
        }
        .encode();
        let page = PageRequest::parse(None, Some(&cursor)).unwrap();
        let key = |p: &Position| match p {
            Position::Key { created_at, pk } => Some((*created_at, *pk)),
            _ => None,
        };
        assert_eq!(page.resume(key).unwrap(), Some((5, 7)));
        let app = |p: &Position| match p {
            Position::App { id } => Some(id.clone()),
            _ => None,
        };
        assert_eq!(field(page.resume(app)), "cursor", "another list's cursor");
        let too_long = "7b".repeat(300);
        for bad in [
            "",
            "zz",
            "7b7d",
            &hex::encode("{\"Machine\":{}}"),
            &too_long,
        ] {
            assert_eq!(
                field(PageRequest::parse(None, Some(bad))),
                "cursor",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_page_says_whether_another_follows() {
        let request = PageRequest::first(2);
        let position = |n: &i64| Position::Machine { pk: *n };
        let page = Page::from_rows(vec![9, 8, 7], &request, position);
        assert_eq!(page.items, [9, 8]);
        assert_eq!(page.next, Some(Position::Machine { pk: 8 }));
        let last = Page::from_rows(vec![9, 8], &request, position);
        assert_eq!(last.next, None);
    }
}
