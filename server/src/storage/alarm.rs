//! The alarm table (etcd's alarm store): which members raised which alarms.
//!
//! Alarms are replicated state: they change only when the apply loop applies
//! an alarm entry, and are persisted in the `meta` keyspace in the same batch
//! (so they survive restarts and travel in snapshots). This in-memory copy
//! hangs off [`super::Db`] because both the apply loop (which changes it and
//! refuses writes while NOSPACE is raised) and the API layer (which lists
//! alarms) hold the database handle.

use super::{Db, Result, meta};
use crate::metrics::METRICS;
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
use parking_lot::RwLock;

#[derive(Default)]
pub struct AlarmTable {
    /// Sorted by (member ID, alarm type), without duplicates.
    active: RwLock<Vec<AlarmMember>>,
}

/// What applying one alarm request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmChange {
    /// The alarms to answer with (etcd's `AlarmResponse.alarms`).
    pub alarms: Vec<AlarmMember>,
    /// Whether the table changed (and must be persisted).
    pub changed: bool,
}

/// etcd's text for an alarm (gogoproto's compact text form, trailing space
/// included): what `etcdctl endpoint status` shows under ERRORS.
pub fn describe(a: &AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", a.member_id, type_name(a.alarm))
}

/// The enum name etcd prints for an alarm type (the number if unknown).
pub fn type_name(t: i32) -> String {
    match AlarmType::try_from(t) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => t.to_string(),
    }
}

fn sort_key(a: &AlarmMember) -> (u64, i32) {
    (a.member_id, a.alarm)
}

impl AlarmTable {
    /// Replaces the table with what the database holds (at open, and after
    /// a snapshot replaced the state machine).
    pub fn reload(&self, db: &Db) -> Result<()> {
        let mut list = meta::alarms(db)?;
        list.sort_by_key(sort_key);
        list.dedup_by_key(|a| sort_key(a));
        *self.active.write() = list;
        self.publish_metrics();
        Ok(())
    }

    /// Alarms of type `t`, or every alarm for `AlarmType::None` (etcd's
    /// `AlarmStore.Get`).
    pub fn list(&self, t: i32) -> Vec<AlarmMember> {
        let active = self.active.read();
        if t == AlarmType::None as i32 {
            return active.clone();
        }
        active.iter().filter(|a| a.alarm == t).cloned().collect()
    }

    /// Whether any member has raised an alarm of this type.
    pub fn is_raised(&self, t: AlarmType) -> bool {
        self.active.read().iter().any(|a| a.alarm == t as i32)
    }

    /// Whether `member` has raised an alarm of this type.
    pub fn has(&self, member: u64, t: AlarmType) -> bool {
        self.active
            .read()
            .iter()
            .any(|a| a.member_id == member && a.alarm == t as i32)
    }

    pub fn is_empty(&self) -> bool {
        self.active.read().is_empty()
    }

    /// Applies an ACTIVATE or DEACTIVATE with etcd's semantics: activating
    /// answers the alarm (new or already raised; nothing for type NONE),
    /// deactivating answers the alarm it removed (nothing if it was not
    /// raised). GET changes nothing and answers the matching alarms. Must
    /// only be called by the apply loop, in log order.
    pub fn apply(&self, req: &AlarmRequest) -> AlarmChange {
        let member = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let change = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => AlarmChange {
                alarms: self.list(req.alarm),
                changed: false,
            },
            Ok(AlarmAction::Activate) => {
                if req.alarm == AlarmType::None as i32 {
                    AlarmChange {
                        alarms: Vec::new(),
                        changed: false,
                    }
                } else {
                    let mut active = self.active.write();
                    let changed = match active.binary_search_by_key(&sort_key(&member), sort_key) {
                        Ok(_) => false,
                        Err(at) => {
                            active.insert(at, member);
                            true
                        }
                    };
                    AlarmChange {
                        alarms: vec![member],
                        changed,
                    }
                }
            }
            Ok(AlarmAction::Deactivate) => {
                let mut active = self.active.write();
                match active.binary_search_by_key(&sort_key(&member), sort_key) {
                    Ok(at) => {
                        let removed = active.remove(at);
                        AlarmChange {
                            alarms: vec![removed],
                            changed: true,
                        }
                    }
                    Err(_) => AlarmChange {
                        alarms: Vec::new(),
                        changed: false,
                    },
                }
            }
            // An action this version does not know: etcd answers nothing.
            Err(_) => AlarmChange {
                alarms: Vec::new(),
                changed: false,
            },
        };
        if change.changed {
            self.publish_metrics();
        }
        change
    }

    /// Every active alarm, for persisting.
    pub fn snapshot(&self) -> Vec<AlarmMember> {
        self.active.read().clone()
    }

    fn publish_metrics(&self) {
        let active = self.active.read();
        for t in [AlarmType::Nospace, AlarmType::Corrupt] {
            let n = active.iter().filter(|a| a.alarm == t as i32).count();
            METRICS
                .alarms
                .with_label_values(&[t.as_str_name()])
                .set(n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        }
    }

    #[test]
    fn activate_deactivate_and_get_follow_etcd() {
        let t = AlarmTable::default();
        let c = t.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace));
        assert!(c.changed);
        assert_eq!(c.alarms.len(), 1);
        // Activating again answers the alarm but changes nothing.
        let c = t.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace));
        assert!(!c.changed);
        assert_eq!(c.alarms[0].member_id, 7);
        // NONE cannot be raised.
        let c = t.apply(&req(AlarmAction::Activate, 7, AlarmType::None));
        assert!(!c.changed && c.alarms.is_empty());
        t.apply(&req(AlarmAction::Activate, 3, AlarmType::Corrupt));
        assert_eq!(t.list(AlarmType::None as i32).len(), 2);
        assert_eq!(t.list(AlarmType::Nospace as i32).len(), 1);
        assert!(t.is_raised(AlarmType::Nospace));
        assert!(t.has(7, AlarmType::Nospace) && !t.has(3, AlarmType::Nospace));
        // Deactivating something not raised answers nothing.
        let c = t.apply(&req(AlarmAction::Deactivate, 3, AlarmType::Nospace));
        assert!(!c.changed && c.alarms.is_empty());
        let c = t.apply(&req(AlarmAction::Deactivate, 7, AlarmType::Nospace));
        assert!(c.changed);
        assert_eq!(
            c.alarms,
            vec![AlarmMember {
                member_id: 7,
                alarm: 1
            }]
        );
        assert!(!t.is_raised(AlarmType::Nospace));
        assert_eq!(
            describe(&t.list(0)[0]),
            "memberID:3 alarm:CORRUPT ".to_string()
        );
    }
}
