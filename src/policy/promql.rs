//! PromQL checked at `andon check` time, not found wrong in production: every query must
//! parse, use no placeholder but `$service`, and answer an instant vector or a scalar.
//!
//! The parser is `promql-parser` (GreptimeTeam): a port of Prometheus' own yacc grammar,
//! maintained and used in production by GreptimeDB. Writing our own would mean writing a
//! second, drifting grammar.

use super::SERVICE_PLACEHOLDER;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr};

/// What `$service` becomes while a query is parsed: any label value would do.
const STAND_IN: &str = "andon_check_service";

/// The longest query andon accepts: the shipped ones are a few hundred characters, and the
/// parser's time grows faster than linearly with long operator chains.
pub const MAX_QUERY_CHARS: usize = 4096;

/// The deepest nesting of brackets: the parser recurses, and a 10,000-deep query
/// overflowed its stack.
pub const MAX_NESTING: usize = 64;

/// Why a query is refused, in words for `file:line:col: field: …`.
pub fn check(query: &str) -> Result<(), String> {
    let chars = query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(format!(
            "the query is {chars} characters long; allowed: at most {MAX_QUERY_CHARS}"
        ));
    }
    let depth = nesting(query);
    if depth > MAX_NESTING {
        return Err(format!(
            "the query nests brackets {depth} deep; allowed: at most {MAX_NESTING}"
        ));
    }
    check_placeholders(query)?;
    let q = query.replace(SERVICE_PLACEHOLDER, STAND_IN);
    let expr = parser::parse(&q).map_err(|e| {
        format!(
            "the PromQL does not parse: {}; allowed: a PromQL expression (try it in Prometheus' expression browser)",
            shorten(e.trim(), 200)
        )
    })?;
    match expr.value_type() {
        ValueType::Vector => {}
        ValueType::Scalar => {
            return Err("the query answers a scalar, which carries no `service` label and cannot make an alert rule; allowed: an instant vector, e.g. sum by (service) (...), or vector(scalar(...))".into())
        }
        ValueType::Matrix => {
            return Err("the query answers a range vector (e.g. `x[5m]`); allowed: an instant vector or a scalar, e.g. rate(x[1m]) or sum by (service) (...)".into())
        }
        ValueType::String => {
            return Err("the query answers a string; allowed: an instant vector or a scalar".into())
        }
    }
    check_semantics(&expr)
}

/// Only `$service` is substituted; `$service_name`, `$svc` or `${service}` would reach
/// Prometheus as they are and match nothing.
fn check_placeholders(query: &str) -> Result<(), String> {
    let bytes = query.as_bytes();
    for (i, _) in query.match_indices('$') {
        let rest = &query[i + 1..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
            .collect();
        // `$` as a regex anchor (`=~"x$"`), or a capture group in label_replace's
        // replacement (`$1`, `${1}`): not a placeholder.
        let group = ident.trim_start_matches('{');
        if ident.is_empty() || group.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        if ident != "service" {
            let end = (i + 1 + ident.len()).min(bytes.len());
            return Err(format!(
                "unknown placeholder `{}`; allowed: $service (the Swarm service's name)",
                shorten(&query[i..end], 40)
            ));
        }
    }
    Ok(())
}

/// Visits every node of a parsed query, parents before children: the one tree walk the
/// checks and the lookups below share.
fn each_node<'e>(e: &'e Expr, f: &mut impl FnMut(&'e Expr)) {
    f(e);
    match e {
        Expr::Call(c) => c.args.args.iter().for_each(|a| each_node(a, f)),
        Expr::Aggregate(a) => {
            each_node(&a.expr, f);
            if let Some(p) = &a.param {
                each_node(p, f);
            }
        }
        Expr::Unary(u) => each_node(&u.expr, f),
        Expr::Binary(b) => {
            each_node(&b.lhs, f);
            each_node(&b.rhs, f);
        }
        Expr::Paren(p) => each_node(&p.expr, f),
        Expr::Subquery(s) => each_node(&s.expr, f),
        _ => {}
    }
}

/// The query parsed as andon sends it (`$service` substituted); `None` if it does not parse
/// or nests too deep for the parser's recursion (the check reports that).
fn parsed(query: &str) -> Option<Expr> {
    if nesting(query) > MAX_NESTING {
        return None;
    }
    parser::parse(&query.replace(SERVICE_PLACEHOLDER, STAND_IN)).ok()
}

/// The metric names a query selects (`x` in `rate(x{...}[1m])`), for telling "nobody
/// exports this" from "no series for this service". Empty if it does not parse.
pub fn metric_names(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = parsed(query) {
        each_node(&e, &mut |n| match n {
            Expr::VectorSelector(v) => out.extend(v.name.clone()),
            Expr::MatrixSelector(m) => out.extend(m.vs.name.clone()),
            _ => {}
        });
    }
    out.sort();
    out.dedup();
    out
}

/// The longest range a query looks back over (`[1m]` in `rate(x[1m])`, or a subquery's),
/// e.g. how long a p95 over `rate(...[1m])` remembers the past. `None` if it has none or
/// does not parse.
pub fn longest_range(query: &str) -> Option<std::time::Duration> {
    let e = parsed(query)?;
    let mut best: Option<std::time::Duration> = None;
    each_node(&e, &mut |n| {
        let range = match n {
            Expr::MatrixSelector(m) => m.range,
            Expr::Subquery(s) => s.range,
            _ => return,
        };
        best = Some(best.map_or(range, |b| b.max(range)));
    });
    best
}

/// Semantic checks the grammar leaves to evaluation time; the first failure.
fn check_semantics(e: &Expr) -> Result<(), String> {
    let mut first: Option<String> = None;
    each_node(e, &mut |n| {
        let Expr::Call(c) = n else { return };
        if first.is_some() || c.func.name != "histogram_quantile" {
            return;
        }
        if let Some(Expr::NumberLiteral(q)) = c.args.args.first().map(|a| a.as_ref()) {
            if !(0.0..=1.0).contains(&q.val) {
                first = Some(format!(
                    "histogram_quantile({}, …) asks for a quantile outside [0, 1]; allowed: 0.95 for p95",
                    q.val
                ));
            }
        }
    });
    first.map_or(Ok(()), Err)
}

/// The deepest nesting of (), [] and {} outside quoted strings.
fn nesting(query: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in query.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' | '`' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    max
}

/// A long text cut to `max` characters, so that a message never repeats a megabyte, with
/// its control characters escaped, so that it stays on its line (a name from a YAML block
/// scalar ended in a newline, and broke the `file:line:col: field: message` line in two).
pub fn shorten(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    let n = s.chars().count();
    if n > max {
        out.push_str(&format!("… ({n} characters)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_found_in_every_selector() {
        let q = r#"histogram_quantile(0.95, sum by (le) (rate(a_bucket{service="$service"}[1m]))) > 0 or sum(rate(b{service="$service"}[1m])) == 0"#;
        assert_eq!(metric_names(q), vec!["a_bucket", "b"]);
    }

    #[test]
    fn shipped_shapes_pass_and_broken_ones_say_why() {
        for ok in [
            r#"sum by (service) (rate(erlmcp_requests_total{service="$service"}[1m]))"#,
            r#"histogram_quantile(0.95, sum by (service, le) (rate(x_bucket{service="$service"}[1m]))) > 0 or sum by (service) (rate(y{service="$service"}[1m])) == 0"#,
            r#"up{service="$service"}"#,
            r#"max(x{service=~"$service|other$"})"#,
            r#"label_replace(sum by (service) (x{service="$service"}), "dst", "$1", "service", "(.*)")"#,
            r#"label_replace(x{service="$service"}, "dst", "${1}", "service", "(.*)")"#,
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            (r#"sum(rate(x{service="$service"}[1m])"#, "does not parse"),
            (
                "SELECT * FROM requests WHERE service = '$service'",
                "does not parse",
            ),
            (r#"x{service="$service"}[5m]"#, "range vector"),
            (
                r#"histogram_quantile(0x7fffffff, rate(x{service="$service"}[1m]))"#,
                "outside [0, 1]",
            ),
            (
                r#"x{service="$service_name"}"#,
                "unknown placeholder `$service_name`",
            ),
            (r#"x{service="${service}"}"#, "unknown placeholder"),
            (r#"rate(x{service="$service"}[1e309m])"#, "does not parse"),
            (r#"scalar(sum(x{service="$service"}))"#, "answers a scalar"),
            (
                &format!(
                    "{}x{{service=\"$service\"}}{}",
                    "sum(".repeat(10_000),
                    ")".repeat(10_000)
                ),
                "characters long",
            ),
            (
                &format!(
                    "{}x{{service=\"$service\"}}{}",
                    "(".repeat(100),
                    ")".repeat(100)
                ),
                "nests brackets 101 deep",
            ),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
