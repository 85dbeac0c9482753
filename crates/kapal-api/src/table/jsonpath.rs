//! The subset of Kubernetes JSONPath that CRD printer columns use.
//!
//! Supported: `.field` (with `\.` escapes), `['field']`, `[n]` (negative from the end),
//! `[start:end:step]`, `[*]` and `.*`, recursive descent `..field`, and filters
//! `[?(@.path op literal)]` with `== != < > <= >=` or a bare `[?(@.path)]` existence test.
//! Evaluation follows client-go's `jsonpath` with missing keys allowed: a missing key yields
//! no result, while an impossible operation (indexing a map, comparing a string with a number)
//! is an error.

use std::cmp::Ordering;

use serde_json::Value;

/// A parsed JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Wildcard,
    /// `..`: the input and every non-empty map or list below it; the next step applies to all.
    Recursive,
    Index(i64),
    Slice {
        start: Option<i64>,
        end: Option<i64>,
        step: Option<i64>,
    },
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Operand,
    /// `None` is an existence test of `left`.
    test: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// A path relative to the filtered element (`@.status`).
    Path(Vec<Step>),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

/// Why an expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("jsonpath {0}")]
pub(super) struct Error(String);

fn err<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error(msg.into()))
}

impl JsonPath {
    /// Parses `.spec.replicas`, `{.spec.replicas}` or `$.spec.replicas`.
    pub(super) fn parse(expr: &str) -> Result<JsonPath, Error> {
        let mut expr = expr.trim();
        if let Some(inner) = expr.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
            expr = inner.trim();
        }
        let expr = expr.strip_prefix('$').unwrap_or(expr);
        Ok(JsonPath { steps: parse_steps(expr)? })
    }

    /// Every value the expression selects in `root`, in document order.
    pub(super) fn find<'a>(&self, root: &'a Value) -> Result<Vec<&'a Value>, Error> {
        eval(&self.steps, vec![root])
    }
}

fn parse_steps(expr: &str) -> Result<Vec<Step>, Error> {
    let chars: Vec<char> = expr.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                steps.push(Step::Recursive);
                i += 2;
                if chars.get(i) != Some(&'[') {
                    i = parse_field(&chars, i, &mut steps);
                }
            }
            '.' => i = parse_field(&chars, i + 1, &mut steps),
            '[' => {
                let close = matching_bracket(&chars, i)?;
                let inner: String = chars[i + 1..close].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = close + 1;
            }
            c if c.is_whitespace() => i += 1,
            c => return err(format!("unexpected {c:?} in {expr:?}")),
        }
    }
    Ok(steps)
}

/// Reads a field name starting at `start`; returns the index after it.
fn parse_field(chars: &[char], start: usize, steps: &mut Vec<Step>) -> usize {
    let mut name = String::new();
    let mut i = start;
    while let Some(&c) = chars.get(i) {
        if c == '\\' {
            if let Some(&escaped) = chars.get(i + 1) {
                name.push(escaped);
            }
            i += 2;
            continue;
        }
        if c.is_whitespace() || matches!(c, '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}') {
            break;
        }
        name.push(c);
        i += 1;
    }
    match name.as_str() {
        // A bare `.` (or `..` before a bracket) names the current value.
        "" => {}
        "*" => steps.push(Step::Wildcard),
        _ => steps.push(Step::Field(name)),
    }
    i
}

/// The index of the `]` closing the `[` at `open`, skipping quoted text and nested brackets.
fn matching_bracket(chars: &[char], open: usize) -> Result<usize, Error> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, &c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, ']') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    err("unterminated [")
}

fn parse_bracket(inner: &str) -> Result<Step, Error> {
    if let Some(filter) = inner.strip_prefix('?') {
        let body = filter.trim().strip_prefix('(').and_then(|f| f.strip_suffix(')'));
        return match body {
            Some(body) => Ok(Step::Filter(Box::new(parse_filter(body.trim())?))),
            None => err(format!("bad filter {inner:?}")),
        };
    }
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(key) = unquote(inner) {
        return Ok(Step::Field(key));
    }
    let parts: Vec<&str> = inner.split(':').map(str::trim).collect();
    let number = |s: &str| -> Result<Option<i64>, Error> {
        if s.is_empty() { Ok(None) } else { s.parse().map(Some).map_err(|_| Error(format!("bad index {inner:?}"))) }
    };
    match parts.as_slice() {
        [index] => match number(index)? {
            Some(n) => Ok(Step::Index(n)),
            None => err("empty index"),
        },
        [start, end] => Ok(Step::Slice { start: number(start)?, end: number(end)?, step: None }),
        [start, end, step] => Ok(Step::Slice { start: number(start)?, end: number(end)?, step: number(step)? }),
        _ => err(format!("bad index {inner:?}")),
    }
}

/// `'text'` or `"text"` without its quotes.
fn unquote(s: &str) -> Option<String> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = s.strip_prefix(quote)?.strip_suffix(quote)?;
    (!body.contains(quote)).then(|| body.to_string())
}

fn parse_filter(body: &str) -> Result<Filter, Error> {
    match find_operator(body) {
        None => Ok(Filter { left: parse_operand(body)?, test: None }),
        Some((at, op, len)) => Ok(Filter {
            left: parse_operand(body[..at].trim())?,
            test: Some((op, parse_operand(body[at + len..].trim())?)),
        }),
    }
}

/// The first comparison operator outside quotes: (byte offset, operator, length).
fn find_operator(body: &str) -> Option<(usize, Op, usize)> {
    let bytes = body.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'=' | b'!' | b'<' | b'>') => {
                let next_is_eq = bytes.get(i + 1) == Some(&b'=');
                let found = match (b, next_is_eq) {
                    (b'=', true) => (Op::Eq, 2),
                    (b'!', true) => (Op::Ne, 2),
                    (b'<', true) => (Op::Le, 2),
                    (b'>', true) => (Op::Ge, 2),
                    (b'<', false) => (Op::Lt, 1),
                    (b'>', false) => (Op::Gt, 1),
                    _ => continue,
                };
                return Some((i, found.0, found.1));
            }
            _ => {}
        }
    }
    None
}

fn parse_operand(s: &str) -> Result<Operand, Error> {
    if let Some(path) = s.strip_prefix('@') {
        return Ok(Operand::Path(parse_steps(path)?));
    }
    if let Some(text) = unquote(s) {
        return Ok(Operand::Literal(Value::String(text)));
    }
    match s {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        _ => {}
    }
    // Like client-go, a literal with a dot is a float and any other number an integer.
    let number = if s.contains('.') {
        s.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
    } else {
        s.parse::<i64>().ok().map(serde_json::Number::from)
    };
    match number {
        Some(n) => Ok(Operand::Literal(Value::Number(n))),
        None => err(format!("bad filter operand {s:?}")),
    }
}

fn eval<'a>(steps: &[Step], mut values: Vec<&'a Value>) -> Result<Vec<&'a Value>, Error> {
    for step in steps {
        values = apply(step, values)?;
    }
    Ok(values)
}

fn apply<'a>(step: &Step, input: Vec<&'a Value>) -> Result<Vec<&'a Value>, Error> {
    let mut out = Vec::new();
    for value in input {
        match step {
            Step::Field(name) => out.extend(value.as_object().and_then(|m| m.get(name))),
            Step::Wildcard => out.extend(children(value)),
            Step::Recursive => descend(value, &mut out),
            Step::Index(n) => {
                if value.is_null() {
                    continue;
                }
                let list = value.as_array().ok_or_else(|| Error("index of a non-list".into()))?;
                let len = i64::try_from(list.len()).unwrap_or(i64::MAX);
                let at = if *n < 0 { n + len } else { *n };
                match usize::try_from(at).ok().and_then(|at| list.get(at)) {
                    Some(v) => out.push(v),
                    None => return err(format!("array index {n} out of bounds")),
                }
            }
            Step::Slice { start, end, step } => {
                if value.is_null() {
                    continue;
                }
                let list = value.as_array().ok_or_else(|| Error("slice of a non-list".into()))?;
                out.extend(slice(list, *start, *end, *step)?);
            }
            Step::Filter(filter) => {
                let list = value.as_array().ok_or_else(|| Error("filter of a non-list".into()))?;
                for item in list {
                    if filter.matches(item)? {
                        out.push(item);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn children(value: &Value) -> Vec<&Value> {
    match value {
        Value::Object(m) => m.values().collect(),
        Value::Array(list) => list.iter().collect(),
        _ => Vec::new(),
    }
}

/// `value` and every map or list below it that has children, in pre-order.
fn descend<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    let kids = children(value);
    if kids.is_empty() {
        return;
    }
    out.push(value);
    for kid in kids {
        descend(kid, out);
    }
}

fn slice(list: &[Value], start: Option<i64>, end: Option<i64>, step: Option<i64>) -> Result<Vec<&Value>, Error> {
    let len = i64::try_from(list.len()).unwrap_or(i64::MAX);
    let mut from = start.unwrap_or(0);
    if from < 0 {
        from += len;
    }
    let mut to = end.unwrap_or(len);
    if to < 0 {
        to += len;
    }
    if from == to {
        return Ok(Vec::new());
    }
    if from < 0 || from >= len || to < 0 || to > len || from > to {
        return err(format!("slice [{from}:{to}] out of bounds"));
    }
    let step = match step {
        None => 1,
        Some(s) if s > 0 => s,
        Some(_) => return err("step must be > 0"),
    };
    let (from, to, step) = (from as usize, to as usize, usize::try_from(step).unwrap_or(usize::MAX));
    Ok(list[from..to].iter().step_by(step).collect())
}

impl Filter {
    fn matches(&self, item: &Value) -> Result<bool, Error> {
        let lefts = self.left.resolve(item)?;
        let Some((op, right)) = &self.test else {
            return Ok(!lefts.is_empty());
        };
        let left = match lefts.as_slice() {
            [] => return Ok(false),
            [one] => *one,
            _ => return err("can only compare one element at a time"),
        };
        let rights = right.resolve(item)?;
        let right = match rights.as_slice() {
            [] => return Ok(false),
            [one] => *one,
            _ => return err("can only compare one element at a time"),
        };
        let ordering = compare(left, right, *op)?;
        Ok(match op {
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
            Op::Lt => ordering == Ordering::Less,
            Op::Gt => ordering == Ordering::Greater,
            Op::Le => ordering != Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
        })
    }
}

impl Operand {
    fn resolve<'a>(&'a self, item: &'a Value) -> Result<Vec<&'a Value>, Error> {
        match self {
            Operand::Path(steps) => eval(steps, vec![item]),
            Operand::Literal(v) => Ok(vec![v]),
        }
    }
}

/// Go template comparison: same basic kind only (ints with ints, floats with floats); booleans
/// only for (in)equality.
fn compare(left: &Value, right: &Value, op: Op) -> Result<Ordering, Error> {
    match (left, right) {
        (Value::String(a), Value::String(b)) => Ok(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) if matches!(op, Op::Eq | Op::Ne) => Ok(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64(), a.is_f64(), b.is_f64()) {
            (Some(x), Some(y), false, false) => Ok(x.cmp(&y)),
            (_, _, true, true) => {
                let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).ok_or_else(|| Error("incomparable numbers".into()))
            }
            _ => err("incompatible types for comparison"),
        },
        _ => err("incompatible types for comparison"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "metadata": {"name": "db", "labels": {"app": "pg", "app.kubernetes.io/name": "postgres"}},
            "spec": {"replicas": 3, "ratio": 0.5, "items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}]},
            "status": {"conditions": [
                {"type": "Progressing", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "Waiting"},
            ]},
        })
    }

    fn find(path: &str) -> Result<Vec<Value>, Error> {
        let doc = doc();
        let found = JsonPath::parse(path)?.find(&doc)?;
        Ok(found.into_iter().cloned().collect())
    }

    #[test]
    fn fields_and_escapes() {
        assert_eq!(find(".spec.replicas").unwrap(), [json!(3)]);
        assert_eq!(find("{.metadata.labels.app}").unwrap(), [json!("pg")]);
        assert_eq!(find("$.metadata.name").unwrap(), [json!("db")]);
        assert_eq!(find(r".metadata.labels.app\.kubernetes\.io/name").unwrap(), [json!("postgres")]);
        assert_eq!(find(".metadata.labels['app.kubernetes.io/name']").unwrap(), [json!("postgres")]);
        assert_eq!(find(".spec.missing.deeper").unwrap(), Vec::<Value>::new());
        assert_eq!(find(".spec.items.name").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn indexes_slices_and_wildcards() {
        assert_eq!(find(".spec.items[0].name").unwrap(), [json!("a")]);
        assert_eq!(find(".spec.items[-1].name").unwrap(), [json!("c")]);
        assert!(find(".spec.items[3].name").is_err());
        assert!(find(".spec.replicas[0]").is_err());
        assert_eq!(find(".spec.items[*].name").unwrap(), [json!("a"), json!("b"), json!("c")]);
        assert_eq!(find(".spec.items[1:].name").unwrap(), [json!("b"), json!("c")]);
        assert_eq!(find(".spec.items[0:3:2].n").unwrap(), [json!(1), json!(3)]);
        assert_eq!(find(".metadata.*").unwrap().len(), 2);
    }

    #[test]
    fn filters() {
        assert_eq!(find(r#".status.conditions[?(@.type=="Ready")].status"#).unwrap(), [json!("False")]);
        assert_eq!(find(".status.conditions[?(@.type == 'Ready')].reason").unwrap(), [json!("Waiting")]);
        assert_eq!(find(r#".status.conditions[?(@.type!="Ready")].type"#).unwrap(), [json!("Progressing")]);
        assert_eq!(find(".status.conditions[?(@.reason)].type").unwrap(), [json!("Ready")]);
        assert_eq!(find(".spec.items[?(@.n >= 2)].name").unwrap(), [json!("b"), json!("c")]);
        assert_eq!(find(".spec.items[?(@.n<2)].name").unwrap(), [json!("a")]);
        // Integers and floats do not compare, as in Go templates.
        assert!(find(".spec.items[?(@.n > 1.5)].name").is_err());
        assert!(find(".spec.items[?(@.name > 1)].name").is_err());
        assert!(find(".spec[?(@.n)]").is_err());
    }

    #[test]
    fn recursive_descent() {
        assert_eq!(find("..name").unwrap(), [json!("db"), json!("a"), json!("b"), json!("c")]);
        assert_eq!(find("..reason").unwrap(), [json!("Waiting")]);
        // The root itself is searched too, so `..status` starts with the status map.
        let statuses = find("..status").unwrap();
        assert_eq!(statuses.len(), 3);
        assert_eq!(statuses[1..], [json!("True"), json!("False")]);
    }

    #[test]
    fn parse_errors() {
        for bad in [".a[", ".a[x]", ".a[?(@.b == )]", ".a[?@.b]", "spec", ".a[1:2:3:4]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
