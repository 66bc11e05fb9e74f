//! The store's health, checked every second: which master Sentinel names, then whether every
//! master answers (and, with `wait_replicas`, has that many replicas attached).

use std::collections::BTreeSet;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;

use super::reach::{Reach, SentinelReach, find_master};
use super::{CHECK_DEADLINE, CHECK_EVERY, SharedError, SharedRedis, no_answer, unreachable};

impl SharedRedis {
    /// One check, as a `lifecycle::repeat` round: through Sentinel, which master it names;
    /// then whether every master answers (and has its replicas, with `wait_replicas`).
    pub async fn check(&self) -> Duration {
        let started = crate::clock::now();
        let found = tokio::time::timeout(CHECK_DEADLINE, self.probe())
            .await
            .unwrap_or_else(|_| Err(no_answer()));
        self.metrics.store_round_trip("check", started.elapsed());
        let status = match found {
            Ok(status) => {
                self.up();
                status
            }
            Err(e) => {
                let status = format!("down: {e}");
                self.down(e);
                status
            }
        };
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
        CHECK_EVERY
    }

    async fn probe(&self) -> Result<String, SharedError> {
        let master = match &self.reach {
            Reach::Sentinel(reach) => format!("master {}, ", self.follow_master(reach).await?),
            _ => String::new(),
        };
        let mut check = redis::cmd("PING");
        if self.wait_replicas > 0 {
            check = redis::cmd("WAIT");
            check.arg(self.wait_replicas).arg(100);
        }
        let mut connection = self.connection().await?;
        let asked = match connection.cluster_masters().await {
            Ok(None) => check.query_async(&mut connection).await.map(|a| vec![a]),
            Ok(Some(masters)) => self.ask_each_master(masters, &check).await,
            Err(e) => Err(e),
        };
        let answers = asked.map_err(|e| {
            self.forget();
            unreachable(e)
        })?;
        let up = match &self.reach {
            Reach::Cluster(_) => format!("{master}{} masters up", answers.len()),
            _ => format!("{master}up"),
        };
        if self.wait_replicas == 0 {
            return Ok(up);
        }
        let acknowledged = answers
            .iter()
            .map(|answer| match answer {
                Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            })
            .min()
            .unwrap_or(0);
        if acknowledged < u64::from(self.wait_replicas) {
            return Err(SharedError::NotReplicated {
                acknowledged,
                wanted: self.wait_replicas,
            });
        }
        Ok(format!("{up}, {acknowledged} replicas attached"))
    }

    /// Sends `check` to each of a cluster's masters over a connection to that master alone:
    /// the cluster connection's routing would stand a replica in for a master it cannot
    /// reach, and hide the very outage a check is for.
    async fn ask_each_master(
        &self,
        masters: BTreeSet<(String, u16)>,
        check: &redis::Cmd,
    ) -> redis::RedisResult<Vec<Value>> {
        let Reach::Cluster(cluster) = &self.reach else {
            return Ok(Vec::new());
        };
        let managers: Vec<ConnectionManager> = {
            let mut known = cluster
                .masters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            known.retain(|address, _| masters.contains(address));
            let mut managers = Vec::with_capacity(masters.len());
            for address in masters {
                let manager = match known.get(&address) {
                    Some(manager) => manager.clone(),
                    None => {
                        let manager = cluster.manager_for(&address)?;
                        known.insert(address, manager.clone());
                        manager
                    }
                };
                managers.push(manager);
            }
            managers
        };
        let mut answers = Vec::with_capacity(managers.len());
        for mut manager in managers {
            answers.push(check.query_async(&mut manager).await?);
        }
        Ok(answers)
    }

    /// Asks the sentinels for the master; a new one makes every thread reconnect.
    async fn follow_master(&self, reach: &SentinelReach) -> Result<String, SharedError> {
        let found = find_master(reach).await?;
        let mut master = reach.master.write().unwrap_or_else(PoisonError::into_inner);
        let moved = master.as_ref().is_none_or(|m| m.address != found.address);
        if moved {
            log::info!(
                "ticket store: sentinel names {} as master of {}",
                found.address,
                reach.master_name
            );
            *master = Some(found.clone());
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(found.address)
    }
}
