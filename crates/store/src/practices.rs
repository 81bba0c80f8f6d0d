//! GP practices: public information, no patient data.

use confide_domain::PracticeId;
use confide_domain::practice::{Address, PracticeName, TimeZoneName};

use crate::read::{OwnedRow, Param};
use crate::{Result, Scope, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Practice {
    pub id: PracticeId,
    pub name: String,
    pub address: String,
    pub time_zone: String,
}

pub struct NewPractice<'a> {
    pub id: PracticeId,
    pub name: &'a PracticeName,
    pub address: &'a Address,
    pub time_zone: &'a TimeZoneName,
    pub at_ms: i64,
}

fn practice(row: &OwnedRow) -> Result<Practice> {
    Ok(Practice {
        id: row.parse("id")?,
        name: row.try_get("name")?,
        address: row.try_get("address")?,
        time_zone: row.try_get("time_zone")?,
    })
}

macro_rules! practice_select {
    () => {
        "SELECT id, name, address, time_zone FROM practices"
    };
}

impl Store {
    pub async fn create_practice(&self, p: NewPractice<'_>) -> Result<Practice> {
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query(
            "INSERT INTO practices (id, name, address, time_zone, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(p.id.to_string())
        .bind(p.name.as_str())
        .bind(p.address.as_str())
        .bind(p.time_zone.as_str())
        .bind(p.at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Practice {
            id: p.id,
            name: p.name.as_str().to_owned(),
            address: p.address.as_str().to_owned(),
            time_zone: p.time_zone.as_str().to_owned(),
        })
    }

    /// Practices whose name or address contains `query`, case-insensitively; all of them for "".
    pub async fn search_practices(&self, query: &str, limit: i64) -> Result<Vec<Practice>> {
        let escaped = query
            .trim()
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        let rows = self
            .select(
                Scope::default(),
                concat!(
                    practice_select!(),
                    " WHERE lower(name) LIKE $1 ESCAPE '\\' OR lower(address) LIKE $1 ESCAPE '\\' \
             ORDER BY name, id LIMIT $2"
                ),
                &[Param::from(pattern), Param::from(limit)],
            )
            .await?;
        rows.iter().map(practice).collect()
    }

    pub async fn practice(&self, id: PracticeId) -> Result<Option<Practice>> {
        let row = self
            .select_one(
                Scope::default(),
                concat!(practice_select!(), " WHERE id = $1"),
                &[Param::from(id.to_string())],
            )
            .await?;
        row.as_ref().map(practice).transpose()
    }

    /// A practice by id or exact name, for the command line.
    pub async fn find_practice(&self, id_or_name: &str) -> Result<Option<Practice>> {
        let row = self
            .select_one(
                Scope::default(),
                concat!(
                    practice_select!(),
                    " WHERE id = $1 OR name = $1 ORDER BY id LIMIT 1"
                ),
                &[Param::from(id_or_name.trim())],
            )
            .await?;
        row.as_ref().map(practice).transpose()
    }
}
