//! The contract's Advanced Features for lists: `page`/`limit`, `sort`/`order` and `fields`.
//!
//! Each list endpoint declares which fields it can sort on (mapped to SQL expressions, so a
//! client never injects SQL) and which it can select; anything else is a 422.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// Highest page number a list accepts.
pub const MAX_PAGE: i64 = 1_000_000;

/// Raw list query parameters, parsed by [`ListQuery::parse`] for clear 422s.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct ListQuery {
    pub page: Option<String>,
    pub limit: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub fields: Option<String>,
}

/// `?fields=` of an endpoint that returns one object (`GET /api/users/me`).
#[derive(Debug, Default, Deserialize)]
pub struct FieldsQuery {
    pub fields: Option<String>,
}

/// What a list endpoint allows.
pub struct ListSpec {
    /// (public name, SQL expression) pairs.
    pub sortable: &'static [(&'static str, &'static str)],
    /// Default sort: (SQL expression, descending).
    pub default_sort: (&'static str, bool),
    /// Fields a client may select with `fields=`.
    pub selectable: &'static [&'static str],
    pub default_limit: i64,
    pub max_limit: i64,
}

/// Validated list parameters.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub page: i64,
    pub limit: i64,
    /// SQL expression to order by (from the endpoint's whitelist).
    pub sort_sql: &'static str,
    pub desc: bool,
    pub fields: Option<Vec<String>>,
}

impl ListParams {
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.limit
    }

    /// `ASC`/`DESC` for SQL.
    pub fn direction(&self) -> &'static str {
        if self.desc { "DESC" } else { "ASC" }
    }

    /// Number of pages for `total` items (at least 1).
    pub fn pages(&self, total: i64) -> i64 {
        ((total + self.limit - 1) / self.limit).max(1)
    }
}

fn parse_positive(field: &str, raw: &Option<String>) -> Result<Option<i64>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s) => match s.trim().parse::<i64>() {
            Ok(v) if v >= 1 => Ok(Some(v)),
            _ => Err(ApiError::validation(field, "must be a positive integer")),
        },
    }
}

impl ListQuery {
    pub fn parse(&self, spec: &ListSpec) -> Result<ListParams, ApiError> {
        let page = parse_positive("page", &self.page)?.unwrap_or(1);
        if page > MAX_PAGE {
            return Err(ApiError::validation(
                "page",
                format!("must be at most {MAX_PAGE}"),
            ));
        }
        let limit = parse_positive("limit", &self.limit)?.unwrap_or(spec.default_limit);
        if limit > spec.max_limit {
            return Err(ApiError::validation(
                "limit",
                format!("must be between 1 and {}", spec.max_limit),
            ));
        }
        let (sort_sql, default_desc) = match self.sort.as_deref().map(str::trim) {
            None | Some("") => spec.default_sort,
            Some(name) => match spec.sortable.iter().find(|(n, _)| *n == name) {
                Some((_, sql)) => (*sql, false),
                None => {
                    let allowed: Vec<&str> = spec.sortable.iter().map(|(n, _)| *n).collect();
                    return Err(ApiError::validation(
                        "sort",
                        format!(
                            "unknown sort field `{name}`; one of: {}",
                            allowed.join(", ")
                        ),
                    ));
                }
            },
        };
        let desc = parse_order(self.order.as_deref(), default_desc)?;
        let fields = parse_fields(self.fields.as_deref(), spec.selectable)?;
        Ok(ListParams {
            page,
            limit,
            sort_sql,
            desc,
            fields,
        })
    }
}

/// `order=`: `desc` → true, `asc` → false (any case), absent or empty → `default_desc`.
pub fn parse_order(raw: Option<&str>, default_desc: bool) -> Result<bool, ApiError> {
    match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(default_desc),
        Some("asc") => Ok(false),
        Some("desc") => Ok(true),
        Some(_) => Err(ApiError::validation("order", "must be `asc` or `desc`")),
    }
}

/// Whether a `fields=` selection names `name` (fields shown only when asked for, like `email`).
pub fn selects(fields: &Option<Vec<String>>, name: &str) -> bool {
    fields.as_ref().is_some_and(|f| f.iter().any(|n| n == name))
}

/// Parses `fields=a,b` against the allowed names. Names the list does not have are skipped
/// (the contract shows one `fields=id,username,email` for every list, and a client may reuse
/// one selection across lists); a selection that names none of the list's fields is a 422, so
/// a typo never silently yields empty objects.
pub fn parse_fields(raw: Option<&str>, allowed: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut out: Vec<String> = Vec::new();
    for name in raw.split(',').map(|n| n.trim_matches([' ', '\t'])) {
        if allowed.contains(&name) && !out.iter().any(|f| f == name) {
            out.push(name.to_string());
        }
    }
    if out.is_empty() {
        return Err(ApiError::validation(
            "fields",
            format!(
                "names no field of this list; one of: {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(Some(out))
}

/// Keeps only `fields` in `item` (an object); other values are left as they are.
pub fn select(item: &mut Value, fields: &Option<Vec<String>>) {
    if let (Some(fields), Value::Object(map)) = (fields, item) {
        map.retain(|k, _| fields.iter().any(|f| f == k));
    }
}

/// Applies [`select`] to every element of the array under `key` in `body`.
pub fn select_in(body: &mut Value, key: &str, fields: &Option<Vec<String>>) {
    if fields.is_none() {
        return;
    }
    if let Some(Value::Array(items)) = body.get_mut(key) {
        for item in items {
            select(item, fields);
        }
    }
}

// ---- The OpenAPI description of these parameters, generated from each endpoint's spec. ----

use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};

/// An optional query parameter of `schema`.
fn query_param(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// An integer from `min` to `max`.
pub fn integer_schema(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
}

/// The regular expression of a `fields=` value [`parse_fields`] accepts: comma-separated
/// names, at least one of them (spaces and tabs around it aside) one of `allowed`.
pub fn fields_pattern(allowed: &[&str]) -> String {
    let one = format!("({})", allowed.join("|"));
    format!("^([^,]*,)*[ \\t]*{one}[ \\t]*(,[^,]*)*$")
}

/// `fields=`, when `allowed` names any field.
pub fn fields_param(allowed: &[&str]) -> Vec<Parameter> {
    if allowed.is_empty() {
        return Vec::new();
    }
    vec![query_param(
        "fields",
        "Comma-separated fields to keep in each item (others are left out; names this list \
         does not have are skipped, but at least one must be its own)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(fields_pattern(allowed))),
    )]
}

/// `page`, `limit`, `sort`, `order` and `fields` as [`ListQuery::parse`] accepts them for `spec`.
pub fn params(spec: &ListSpec) -> Vec<Parameter> {
    let mut out = vec![
        query_param(
            "page",
            "Page number, from 1",
            integer_schema(1, MAX_PAGE).default(Some(Value::from(1))),
        ),
        query_param(
            "limit",
            "Items per page",
            integer_schema(1, spec.max_limit).default(Some(Value::from(spec.default_limit))),
        ),
    ];
    // An empty value (a form's "nothing chosen") is the default, as the parser has it.
    let mut names: Vec<&str> = spec.sortable.iter().map(|(n, _)| *n).collect();
    names.push("");
    out.push(query_param(
        "sort",
        "Field to sort on (empty: the default)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names)),
    ));
    out.push(query_param(
        "order",
        "Sort direction (empty: the sort's default)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["asc", "desc", ""])),
    ));
    out.extend(fields_param(spec.selectable));
    out
}

/// Declares `$name`, the OpenAPI query parameters of a list endpoint whose spec is `$spec`
/// (use it as `params($name)` in `#[utoipa::path]`).
#[macro_export]
macro_rules! list_params {
    ($name:ident, $spec:expr) => {
        #[doc = concat!("OpenAPI list parameters of `", stringify!($spec), "`.")]
        pub struct $name;
        impl utoipa::IntoParams for $name {
            fn into_params(
                _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
            ) -> Vec<utoipa::openapi::path::Parameter> {
                $crate::http::list::params(&$spec)
            }
        }
    };
}

/// Declares `$name`, the OpenAPI `fields=` parameter for the names in `$fields`.
#[macro_export]
macro_rules! fields_params {
    ($name:ident, $fields:expr) => {
        #[doc = concat!("OpenAPI `fields=` parameter of `", stringify!($fields), "`.")]
        pub struct $name;
        impl utoipa::IntoParams for $name {
            fn into_params(
                _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
            ) -> Vec<utoipa::openapi::path::Parameter> {
                $crate::http::list::fields_param($fields)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: ListSpec = ListSpec {
        sortable: &[("created_at", "w.created_at"), ("name", "lower(w.name)")],
        default_sort: ("w.id", false),
        selectable: &["id", "name"],
        default_limit: 20,
        max_limit: 100,
    };

    fn q(
        page: Option<&str>,
        limit: Option<&str>,
        sort: Option<&str>,
        order: Option<&str>,
    ) -> ListQuery {
        ListQuery {
            page: page.map(Into::into),
            limit: limit.map(Into::into),
            sort: sort.map(Into::into),
            order: order.map(Into::into),
            fields: None,
        }
    }

    #[test]
    fn defaults_and_offsets() {
        let p = q(None, None, None, None).parse(&SPEC).expect("ok");
        assert_eq!(
            (p.page, p.limit, p.offset(), p.sort_sql, p.desc),
            (1, 20, 0, "w.id", false)
        );
        let p = q(Some("3"), Some("10"), Some("name"), Some("DESC"))
            .parse(&SPEC)
            .expect("ok");
        assert_eq!(
            (p.offset(), p.sort_sql, p.desc),
            (20, "lower(w.name)", true)
        );
        assert_eq!(p.pages(0), 1);
        assert_eq!(p.pages(21), 3);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            q(Some("0"), None, None, None),
            q(Some("x"), None, None, None),
            q(None, Some("101"), None, None),
            q(None, Some("-1"), None, None),
            q(None, None, Some("password"), None),
            q(None, None, None, Some("sideways")),
        ] {
            assert!(bad.parse(&SPEC).is_err(), "{bad:?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_text() -> impl Strategy<Value = Option<String>> {
            proptest::option::of(prop_oneof![
                "\\PC{0,12}",
                any::<i64>().prop_map(|v| v.to_string()),
                "[a-z_, ]{0,16}",
            ])
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any query parses or is refused naming a list parameter; what parses is in range.
            #[test]
            fn parse_is_total(page in any_text(), limit in any_text(), sort in any_text(),
                              order in any_text(), fields in any_text()) {
                let query = ListQuery { page, limit, sort, order, fields };
                match query.parse(&SPEC) {
                    Ok(p) => {
                        prop_assert!((1..=MAX_PAGE).contains(&p.page));
                        prop_assert!((1..=SPEC.max_limit).contains(&p.limit));
                        prop_assert!(p.offset() >= 0);
                        prop_assert!(p.sort_sql == SPEC.default_sort.0
                            || SPEC.sortable.iter().any(|(_, sql)| *sql == p.sort_sql));
                        if let Some(f) = &p.fields {
                            prop_assert!(f.iter().all(|x| SPEC.selectable.contains(&x.as_str())));
                        }
                    }
                    Err(ApiError::Validation { field, .. }) => {
                        prop_assert!(["page", "limit", "sort", "order", "fields"].contains(&field.as_str()));
                    }
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }

            /// Everything the OpenAPI parameters allow is accepted, as given.
            #[test]
            fn documented_values_are_accepted(page in 1..=MAX_PAGE, limit in 1..=100i64,
                                              sort in 0..2usize, desc in any::<bool>(),
                                              fields in proptest::sample::subsequence(vec!["id", "name"], 1..=2)) {
                let query = ListQuery {
                    page: Some(page.to_string()),
                    limit: Some(limit.to_string()),
                    sort: Some(SPEC.sortable[sort].0.to_string()),
                    order: Some(if desc { "desc" } else { "asc" }.to_string()),
                    fields: Some(fields.join(",")),
                };
                let p = query.parse(&SPEC).expect("documented values are accepted");
                prop_assert_eq!((p.page, p.limit, p.desc), (page, limit, desc));
                prop_assert_eq!(p.sort_sql, SPEC.sortable[sort].1);
                prop_assert_eq!(p.fields.expect("fields").len(), fields.len());
            }

            /// The documented `fields` pattern accepts exactly what the parser accepts, so a
            /// client (or a schema-driven fuzzer) can trust it both ways.
            #[test]
            fn fields_pattern_agrees_with_the_parser(raw in "(id|name|nam|idx|[a-z]{0,3}|[ \t\u{a0}]|,){0,8}") {
                let pattern = regex::Regex::new(&fields_pattern(&["id", "name"])).expect("regex");
                let parsed = parse_fields(Some(&raw), &["id", "name"]);
                prop_assert_eq!(pattern.is_match(&raw), parsed.is_ok(), "{:?}", raw);
            }
        }

        /// The documented `fields` pattern names the same fields the parser accepts.
        #[test]
        fn fields_pattern_lists_the_selectable_fields() {
            assert_eq!(
                fields_pattern(&["id", "name"]),
                r"^([^,]*,)*[ \t]*(id|name)[ \t]*(,[^,]*)*$"
            );
            let params = params(&SPEC);
            let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
            assert_eq!(names, ["page", "limit", "sort", "order", "fields"]);
        }
    }

    #[test]
    fn field_selection() {
        assert!(parse_fields(Some("secret,password_hash"), SPEC.selectable).is_err());
        assert!(parse_fields(Some(""), SPEC.selectable).is_err());
        let known = parse_fields(Some("id,secret"), SPEC.selectable).expect("ok");
        assert_eq!(known, Some(vec!["id".to_string()]));
        let fields = parse_fields(Some("id, id"), SPEC.selectable).expect("ok");
        let mut body = json!({"items": [{"id": 1, "name": "a"}]});
        select_in(&mut body, "items", &fields);
        assert_eq!(body, json!({"items": [{"id": 1}]}));
    }
}
