//! Prepared statements of one session: id → SQL text, so each
//! COM_STMT_EXECUTE can be audited with the statement it runs.

use std::{collections::HashMap, sync::Arc};

use super::command::LAST_PREPARED;

/// Statement ids the server handed out on this session.
///
/// Bounded by the server, which refuses more than
/// `max_prepared_stmt_count` statements; entries only appear after the
/// server's PREPARE OK.
#[derive(Debug, Default, Clone)]
pub struct Statements {
    by_id: HashMap<u32, Arc<str>>,
    last: Option<u32>,
}

impl Statements {
    pub fn insert(&mut self, stmt_id: u32, sql: Arc<str>) {
        self.by_id.insert(stmt_id, sql);
        self.last = Some(stmt_id);
    }

    /// The SQL of `stmt_id` ([`LAST_PREPARED`] means the latest one).
    pub fn get(&self, stmt_id: u32) -> Option<Arc<str>> {
        let id = if stmt_id == LAST_PREPARED {
            self.last?
        } else {
            stmt_id
        };
        self.by_id.get(&id).cloned()
    }

    pub fn remove(&mut self, stmt_id: u32) {
        let id = if stmt_id == LAST_PREPARED {
            match self.last {
                Some(id) => id,
                None => return,
            }
        } else {
            stmt_id
        };
        self.by_id.remove(&id);
        if self.last == Some(id) {
            self.last = None;
        }
    }

    /// COM_RESET_CONNECTION drops every statement on the server.
    pub fn clear(&mut self) {
        self.by_id.clear();
        self.last = None;
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_last() {
        let mut s = Statements::default();
        s.insert(1, "select 1".into());
        s.insert(2, "select ?".into());
        assert_eq!(s.get(1).as_deref(), Some("select 1"));
        assert_eq!(s.get(LAST_PREPARED).as_deref(), Some("select ?"));
        s.remove(LAST_PREPARED);
        assert_eq!(s.get(2), None);
        assert_eq!(s.get(LAST_PREPARED), None);
        assert_eq!(s.len(), 1);
        s.clear();
        assert!(s.is_empty());
    }
}
