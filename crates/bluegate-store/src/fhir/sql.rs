//! SQL text for FHIR searches and bulk writes, the same for both backends (`$N` placeholders, bound in
//! order, never reused). Index rows name their resource by number (`rid`) and their parameter by
//! code ([`ParamDef::code`](super::params::ParamDef::code)), which implies the resource type. Every
//! parameter condition reads one index table through its `(param, value..., rid)` index; `_id` uses the
//! `(resource_type, id)` key and `_lastUpdated` the `(resource_type, last_updated, id)` index.

use super::params::{DatePrefix, ParamKind, ParamValue, ParsedParam};
use super::{SearchQuery, MAX_TOTAL};

/// A bound value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    /// A type or parameter name (no allocation per row of a bulk insert).
    Static(&'static str),
    Int(i64),
    /// A stored resource body in the backend's own encoding (see `encode_body`).
    Blob(Vec<u8>),
}

/// SQL text with its binds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    /// Rewrites `$N` placeholders as anonymous `?` (they are numbered in text order, so the binds line
    /// up). Idempotent. The generated SQL has no other `$`.
    pub fn make_positional(&mut self) {
        if !self.text.contains('$') {
            return;
        }
        let mut out = String::with_capacity(self.text.len());
        let mut chars = self.text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('?');
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            } else {
                out.push(c);
            }
        }
        self.text = out;
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn placeholder(&mut self, b: Bind) -> &mut Self {
        self.binds.push(b);
        self.text.push('$');
        self.text.push_str(&self.binds.len().to_string());
        self
    }

    pub fn text_arg(&mut self, v: &str) -> &mut Self {
        self.placeholder(Bind::Text(v.to_owned()))
    }

    pub fn int_arg(&mut self, v: i64) -> &mut Self {
        self.placeholder(Bind::Int(v))
    }

    /// `($a, $b, ...)` of text binds.
    pub fn text_list<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.list(values.into_iter().map(|v| Bind::Text(v.to_owned())))
    }

    /// `($a, $b, ...)` of integer binds.
    pub fn int_list(&mut self, values: impl IntoIterator<Item = i64>) -> &mut Self {
        self.list(values.into_iter().map(Bind::Int))
    }

    fn list(&mut self, values: impl Iterator<Item = Bind>) -> &mut Self {
        self.push("(");
        for (i, v) in values.enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.placeholder(v);
        }
        self.push(")")
    }

    /// Appends one row `($a, $b, ...)` of a multi-row VALUES list.
    pub fn row(&mut self, first: bool, values: impl IntoIterator<Item = Bind>) -> &mut Self {
        if !first {
            self.push(",");
        }
        self.push("(");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(",");
            }
            self.placeholder(v);
        }
        self.push(")")
    }
}

/// A write's index rows, column by column, in resource-number order: each backend inserts them its
/// own way (SQLite: multi-row statements; PostgreSQL: one `UNNEST` of arrays per table).
#[derive(Debug, Default)]
pub(crate) struct IndexRows {
    /// `fhir_token`: rid, param, system, code.
    pub token: (Vec<i64>, Vec<i64>, Vec<String>, Vec<String>),
    /// `fhir_ref`: rid, param, target.
    pub reference: (Vec<i64>, Vec<i64>, Vec<String>),
    /// `fhir_date`: rid, param, low, high.
    pub date: (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>),
    /// `fhir_string`: rid, param, value.
    pub string: (Vec<i64>, Vec<i64>, Vec<String>),
    /// `fhir_compartment`: rid, patient_id.
    pub compartment: (Vec<i64>, Vec<String>),
}

impl IndexRows {
    /// The rows as multi-row `INSERT`s of at most `per_statement` rows (their values moved, not copied).
    pub fn into_inserts(self, per_statement: usize) -> Vec<Sql> {
        let (rid, param, system, code) = self.token;
        let mut token = Inserts::new("fhir_token", "rid, param, system, code", per_statement);
        for (((r, p), s), c) in rid.into_iter().zip(param).zip(system).zip(code) {
            token.row([Bind::Int(r), Bind::Int(p), Bind::Text(s), Bind::Text(c)]);
        }
        let (rid, param, target) = self.reference;
        let mut reference = Inserts::new("fhir_ref", "rid, param, target", per_statement);
        for ((r, p), t) in rid.into_iter().zip(param).zip(target) {
            reference.row([Bind::Int(r), Bind::Int(p), Bind::Text(t)]);
        }
        let (rid, param, low, high) = self.date;
        let mut date = Inserts::new("fhir_date", "rid, param, low, high", per_statement);
        for (((r, p), l), h) in rid.into_iter().zip(param).zip(low).zip(high) {
            date.row([Bind::Int(r), Bind::Int(p), Bind::Int(l), Bind::Int(h)]);
        }
        let (rid, param, value) = self.string;
        let mut string = Inserts::new("fhir_string", "rid, param, value", per_statement);
        for ((r, p), v) in rid.into_iter().zip(param).zip(value) {
            string.row([Bind::Int(r), Bind::Int(p), Bind::Text(v)]);
        }
        let (rid, patient) = self.compartment;
        let mut compartment = Inserts::new("fhir_compartment", "rid, patient_id", per_statement);
        for (r, p) in rid.into_iter().zip(patient) {
            compartment.row([Bind::Int(r), Bind::Text(p)]);
        }
        [token, reference, date, string, compartment]
            .into_iter()
            .flat_map(|i| i.statements)
            .collect()
    }
}

/// Multi-row `INSERT`s into one table, at most `per_statement` rows each, built row by row.
pub(crate) struct Inserts {
    head: String,
    per_statement: usize,
    rows: usize,
    pub statements: Vec<Sql>,
}

impl Inserts {
    pub fn new(table: &str, cols: &str, per_statement: usize) -> Self {
        Inserts {
            head: format!("INSERT INTO {table} ({cols}) VALUES "),
            per_statement: per_statement.max(1),
            rows: 0,
            statements: Vec::new(),
        }
    }

    pub fn row(&mut self, values: impl IntoIterator<Item = Bind>) {
        let first = self.rows.is_multiple_of(self.per_statement);
        if first {
            self.statements.push(Sql::new(&self.head));
        }
        if let Some(sql) = self.statements.last_mut() {
            sql.row(first, values);
        }
        self.rows += 1;
    }
}

pub(crate) const RESOURCE_COLS: &str = "resource_type, id, version_id, last_updated, json";

/// `(tl, th)` (the indexed range) against the query range `[low, high]` per FHIR R4 date semantics.
fn date_condition(
    sql: &mut Sql,
    prefix: DatePrefix,
    low: i64,
    high: i64,
    tl: &str,
    th: &str,
    now_ms: i64,
) {
    let cmp = |sql: &mut Sql, col: &str, op: &str, v: i64| {
        sql.push(col).push(" ").push(op).push(" ").int_arg(v);
    };
    sql.push("(");
    match prefix {
        DatePrefix::Eq => {
            cmp(sql, tl, ">=", low);
            sql.push(" AND ");
            cmp(sql, th, "<=", high);
        }
        DatePrefix::Ne => {
            cmp(sql, tl, "<", low);
            sql.push(" OR ");
            cmp(sql, th, ">", high);
        }
        DatePrefix::Gt => cmp(sql, th, ">", high),
        DatePrefix::Lt => cmp(sql, tl, "<", low),
        DatePrefix::Ge => {
            cmp(sql, th, ">", high);
            sql.push(" OR (");
            cmp(sql, tl, ">=", low);
            sql.push(" AND ");
            cmp(sql, th, "<=", high);
            sql.push(")");
        }
        DatePrefix::Le => {
            cmp(sql, tl, "<", low);
            sql.push(" OR (");
            cmp(sql, tl, ">=", low);
            sql.push(" AND ");
            cmp(sql, th, "<=", high);
            sql.push(")");
        }
        DatePrefix::Sa => cmp(sql, tl, ">", high),
        DatePrefix::Eb => cmp(sql, th, "<", low),
        DatePrefix::Ap => {
            // FHIR recommends 10% of the gap between now and the date; at least the value's own range.
            let w = (now_ms.saturating_sub(low)).saturating_abs() / 10;
            cmp(sql, tl, "<=", high.saturating_add(w));
            sql.push(" AND ");
            cmp(sql, th, ">=", low.saturating_sub(w));
        }
    }
    sql.push(")");
}

fn or_values(sql: &mut Sql, values: &[ParamValue], mut each: impl FnMut(&mut Sql, &ParamValue)) {
    sql.push("(");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        each(sql, v);
    }
    sql.push(")");
}

/// Writes `SELECT DISTINCT x.rid FROM <index table> x WHERE ...` (the resources matching `p`). Not
/// for `_lastUpdated`, which is a condition on `r` itself ([`last_updated_condition`]).
/// With `correlated`, writes `SELECT 1 FROM ... WHERE x.rid = r.rid AND ...` instead (for `EXISTS`).
fn param_subquery(sql: &mut Sql, rt: &str, p: &ParsedParam, now_ms: i64, correlated: bool) {
    let sub = |sql: &mut Sql, table: &str| {
        sql.push(if correlated {
            "SELECT 1 FROM "
        } else {
            "SELECT DISTINCT x.rid FROM "
        })
        .push(table)
        .push(" x WHERE ");
        if correlated {
            sql.push("x.rid = r.rid AND ");
        }
        sql.push("x.param = ").int_arg(p.code).push(" AND ");
    };
    match p.kind {
        ParamKind::Id | ParamKind::LastUpdated => {
            let ids = p.values.iter().filter_map(|v| match v {
                ParamValue::Id(id) => Some(id.as_str()),
                _ => None,
            });
            if correlated {
                sql.push("SELECT 1 FROM fhir_resources x WHERE x.rid = r.rid AND x.id IN ");
            } else {
                sql.push("SELECT x.rid FROM fhir_resources x WHERE x.resource_type = ")
                    .text_arg(rt)
                    .push(" AND x.id IN ");
            }
            sql.text_list(ids);
        }
        ParamKind::Token => {
            sub(sql, "fhir_token");
            or_values(sql, &p.values, |sql, v| {
                let ParamValue::Token(t) = v else {
                    sql.push("1 = 0");
                    return;
                };
                sql.push("(");
                match (&t.system, &t.code) {
                    (None, Some(code)) => {
                        sql.push("x.code = ").text_arg(code);
                    }
                    (Some(system), Some(code)) => {
                        sql.push("x.code = ")
                            .text_arg(code)
                            .push(" AND x.system = ")
                            .text_arg(system);
                    }
                    (Some(system), None) => {
                        sql.push("x.system = ").text_arg(system);
                    }
                    (None, None) => {
                        sql.push("1 = 0");
                    }
                }
                sql.push(")");
            });
        }
        ParamKind::Reference => {
            sub(sql, "fhir_ref");
            let targets = p.values.iter().flat_map(|v| match v {
                ParamValue::Reference(t) => t.as_slice(),
                _ => &[],
            });
            sql.push("x.target IN ");
            sql.text_list(targets.map(String::as_str));
        }
        ParamKind::Date => {
            sub(sql, "fhir_date");
            or_values(sql, &p.values, |sql, v| {
                if let ParamValue::Date { prefix, low, high } = v {
                    date_condition(sql, *prefix, *low, *high, "x.low", "x.high", now_ms);
                } else {
                    sql.push("1 = 0");
                }
            });
        }
        ParamKind::String => {
            sub(sql, "fhir_string");
            or_values(sql, &p.values, |sql, v| {
                let ParamValue::String(s) = v else {
                    sql.push("1 = 0");
                    return;
                };
                // A prefix range (byte order: BINARY in SQLite, COLLATE "C" in PostgreSQL).
                let mut upper = s.clone();
                upper.push(char::MAX);
                sql.push("(x.value >= ")
                    .text_arg(s)
                    .push(" AND x.value < ")
                    .text_arg(&upper)
                    .push(")");
            });
        }
    }
}

fn last_updated_condition(sql: &mut Sql, p: &ParsedParam, now_ms: i64) {
    or_values(sql, &p.values, |sql, v| {
        if let ParamValue::Date { prefix, low, high } = v {
            let col = "r.last_updated";
            date_condition(sql, *prefix, *low, *high, col, col, now_ms);
        } else {
            sql.push("1 = 0");
        }
    });
}

/// The resources in the patients' compartments (of any type: the join with `r` keeps the type's).
fn compartment_subquery(sql: &mut Sql, patients: &[String], correlated: bool) {
    sql.push(if correlated {
        "SELECT 1 FROM fhir_compartment c WHERE c.rid = r.rid AND "
    } else {
        "SELECT DISTINCT c.rid FROM fhir_compartment c WHERE "
    })
    .push("c.patient_id IN ")
    .text_list(patients.iter().map(String::as_str));
}

/// Which condition leads the plan: the most selective kind of parameter, else the compartment, else a
/// date. (`usize::MAX` = the compartment.)
fn driver(q: &SearchQuery) -> Option<usize> {
    let rank = |k: ParamKind| match k {
        ParamKind::Id => 0,
        ParamKind::Reference => 1,
        ParamKind::Token => 2,
        ParamKind::String => 3,
        ParamKind::Date => 5,
        ParamKind::LastUpdated => 9,
    };
    let mut best: Option<(u8, usize)> = None;
    for (i, p) in q.params.iter().enumerate() {
        let r = rank(p.kind);
        if r < 9 && !p.values.is_empty() && best.is_none_or(|(b, _)| r < b) {
            best = Some((r, i));
        }
    }
    if q.patient_compartment
        .as_ref()
        .is_some_and(|c| !c.is_empty())
        && best.is_none_or(|(b, _)| 4 < b)
    {
        best = Some((4, usize::MAX));
    }
    best.map(|(_, i)| i)
}

/// `FROM ... WHERE ...` for the query's filters (no cursor, no order). With a selective condition, the
/// plan is led by it: `FROM (<its ids>) m CROSS JOIN fhir_resources r` (SQLite keeps the CROSS JOIN
/// order; PostgreSQL plans freely), so a search never walks every resource of the type.
fn from_where(sql: &mut Sql, q: &SearchQuery, now_ms: i64) {
    let rt = q.resource_type.as_str();
    let lead = driver(q);
    match lead {
        Some(i) => {
            sql.push(" FROM (");
            match (i, &q.patient_compartment) {
                (usize::MAX, Some(patients)) => compartment_subquery(sql, patients, false),
                _ => {
                    if let Some(p) = q.params.get(i) {
                        param_subquery(sql, rt, p, now_ms, false);
                    }
                }
            }
            sql.push(") m CROSS JOIN fhir_resources r WHERE r.rid = m.rid AND r.resource_type = ")
                .text_arg(rt);
        }
        None => {
            sql.push(" FROM fhir_resources r WHERE r.resource_type = ")
                .text_arg(rt);
        }
    }
    for (i, p) in q.params.iter().enumerate() {
        if lead == Some(i) {
            continue;
        }
        if p.values.is_empty() {
            sql.push(" AND 1 = 0");
        } else if p.kind == ParamKind::LastUpdated {
            sql.push(" AND ");
            last_updated_condition(sql, p, now_ms);
        } else {
            // Checked per candidate row (the lead condition already narrowed them).
            sql.push(" AND EXISTS (");
            param_subquery(sql, rt, p, now_ms, true);
            sql.push(")");
        }
    }
    if let Some(patients) = &q.patient_compartment {
        if patients.is_empty() {
            sql.push(" AND 1 = 0");
        } else if lead != Some(usize::MAX) {
            sql.push(" AND EXISTS (");
            compartment_subquery(sql, patients, true);
            sql.push(")");
        }
    }
}

/// One page: newest first, keyset-paged after `cursor` (last_updated ms, id), `limit` rows.
pub(crate) fn search_sql(
    q: &SearchQuery,
    cursor: Option<&(i64, String)>,
    limit: i64,
    now_ms: i64,
) -> Sql {
    let mut sql = Sql::new("SELECT r.resource_type, r.id, r.version_id, r.last_updated, r.json");
    from_where(&mut sql, q, now_ms);
    if let Some((lu, id)) = cursor {
        sql.push(" AND (r.last_updated < ")
            .int_arg(*lu)
            .push(" OR (r.last_updated = ")
            .int_arg(*lu)
            .push(" AND r.id < ")
            .text_arg(id)
            .push("))");
    }
    sql.push(" ORDER BY r.last_updated DESC, r.id DESC LIMIT ")
        .int_arg(limit);
    sql
}

/// The number of matches, counting at most `MAX_TOTAL + 1`.
pub(crate) fn count_sql(q: &SearchQuery, now_ms: i64) -> Sql {
    let mut sql = Sql::new("SELECT COUNT(*) AS n FROM (SELECT 1 AS one");
    from_where(&mut sql, q, now_ms);
    sql.push(" LIMIT ")
        .int_arg(i64::try_from(MAX_TOTAL + 1).unwrap_or(i64::MAX))
        .push(") AS matches");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::params::{parse_param, ResourceType};

    #[test]
    fn index_rows_become_inserts() {
        let rows = IndexRows {
            reference: (
                vec![7, 8],
                vec![102, 102],
                vec!["Patient/a".into(), "Patient/b".into()],
            ),
            compartment: (vec![7], vec!["a".into()]),
            ..IndexRows::default()
        };
        let sql = rows.into_inserts(1000);
        assert_eq!(sql.len(), 2);
        assert_eq!(
            sql[0].text,
            "INSERT INTO fhir_ref (rid, param, target) VALUES ($1,$2,$3),($4,$5,$6)"
        );
        assert_eq!(
            sql[0].binds,
            [
                Bind::Int(7),
                Bind::Int(102),
                Bind::Text("Patient/a".into()),
                Bind::Int(8),
                Bind::Int(102),
                Bind::Text("Patient/b".into())
            ]
        );
        assert_eq!(
            sql[1].text,
            "INSERT INTO fhir_compartment (rid, patient_id) VALUES ($1,$2)"
        );
    }

    #[test]
    fn inserts_split_into_statements() {
        let mut ins = Inserts::new("t", "a, b", 2);
        for i in 0..5 {
            ins.row([Bind::Int(i), Bind::Text(format!("v{i}"))]);
        }
        let texts: Vec<&str> = ins.statements.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)",
                "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)",
                "INSERT INTO t (a, b) VALUES ($1,$2)",
            ]
        );
        assert_eq!(
            ins.statements[2].binds,
            [Bind::Int(4), Bind::Text("v4".into())]
        );
    }

    #[test]
    fn search_sql_shape() {
        let rt = ResourceType::ExplanationOfBenefit;
        let mut q = SearchQuery::new(rt);
        q.params.push(parse_param(rt, "patient", "p1").unwrap());
        q.params.push(parse_param(rt, "type", "a|b,c").unwrap());
        q.patient_compartment = Some(vec!["p1".into()]);
        let s = search_sql(&q, Some(&(5, "x".into())), 11, 0);
        assert!(
            s.text.contains(
                " FROM (SELECT DISTINCT x.rid FROM fhir_ref x WHERE x.param = $1 \
                 AND x.target IN ($2)) m CROSS JOIN fhir_resources r WHERE r.rid = m.rid \
                 AND r.resource_type = $3 AND EXISTS (SELECT 1 FROM fhir_token x WHERE \
                 x.rid = r.rid AND x.param = $4"
            ),
            "{}",
            s.text
        );
        assert_eq!(s.binds[0], Bind::Int(102));
        assert_eq!(s.binds[3], Bind::Int(103));
        assert!(
            s.text
                .contains("((x.code = $5 AND x.system = $6) OR (x.code = $7))"),
            "{}",
            s.text
        );
        assert!(
            s.text.contains("EXISTS (SELECT 1 FROM fhir_compartment c WHERE c.rid = r.rid AND c.patient_id IN ($8))"),
            "{}",
            s.text
        );
        assert!(
            s.text
                .ends_with("ORDER BY r.last_updated DESC, r.id DESC LIMIT $12"),
            "{}",
            s.text
        );
        assert_eq!(s.binds.len(), 12);
        assert_eq!(s.binds[11], Bind::Int(11));
        let mut p = s.clone();
        p.make_positional();
        assert_eq!(p.text.matches('?').count(), 12);
        assert!(!p.text.contains('$'));
    }
}
