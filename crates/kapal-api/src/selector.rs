//! Label selectors and field selectors with the semantics of Kubernetes' apimachinery:
//! the string syntax of `labels.Parse` and `fields.ParseSelector`, the object form of
//! `metav1.LabelSelector`, the matching rules, the canonical strings and the error messages.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

// Label keys and values are validated by `validation::names`, with upstream's messages.
use crate::validation::names::{is_qualified_name as label_key_errors, is_valid_label_value as label_value_errors};

/// A string quoted the way Go's `%q` shows it (close enough for error messages).
fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A `field.Invalid` error rendered as `path: Invalid value: "v": detail`.
fn invalid(path: &str, shown: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {shown}: {detail}")
}

/// Go's `%#v` of a `[]string`, as field errors show a list of values.
fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// `utilerrors.NewAggregate(errs).Error()`: one message alone, several in brackets.
fn aggregate(mut errs: Vec<String>) -> Result<(), String> {
    errs.dedup();
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

// ---------------------------------------------------------------------------------------------
// Label selector requirements
// ---------------------------------------------------------------------------------------------

/// The operator of one label requirement (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOp {
    /// `key=value`
    Equals,
    /// `key==value` (same meaning as `=`, kept so the string round-trips)
    DoubleEquals,
    /// `key!=value`: true when the label is absent or differs
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`: true when the label is absent or not listed
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>n`: the label is an integer greater than n
    GreaterThan,
    /// `key<n`: the label is an integer less than n
    LessThan,
}

/// One requirement of a label selector: a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: LabelOp,
    values: Vec<String>,
}

impl Requirement {
    /// A validated requirement (`labels.NewRequirement`): the key must be a qualified name,
    /// the values valid label values, and their number must suit the operator.
    pub fn new(key: &str, op: LabelOp, values: Vec<String>) -> Result<Requirement, String> {
        let mut errs = Vec::new();
        let key_errs = label_key_errors(key);
        if !key_errs.is_empty() {
            errs.push(invalid("key", &quote(key), &key_errs.join("; ")));
        }
        errs.extend(operator_arity_errors(op, &values));
        for (i, v) in values.iter().enumerate() {
            let value_errs = label_value_errors(v);
            if !value_errs.is_empty() {
                errs.push(invalid(&format!("values[{i}][{key}]"), &quote(v), &value_errs.join("; ")));
            }
        }
        aggregate(errs)?;
        Ok(Requirement { key: key.to_string(), op, values })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn op(&self) -> LabelOp {
        self.op
    }

    /// The values (empty for `Exists` and `DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set, seen through `get`, satisfies this requirement.
    pub fn matches_fn<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let value = get(&self.key);
        match self.op {
            LabelOp::Equals | LabelOp::DoubleEquals | LabelOp::In => value.is_some_and(|v| self.has_value(v)),
            LabelOp::NotEquals | LabelOp::NotIn => value.is_none_or(|v| !self.has_value(v)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => value.is_some_and(|v| self.compares(v)),
        }
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    fn compares(&self, label: &str) -> bool {
        let (Ok(have), [want]) = (label.parse::<i64>(), self.values.as_slice()) else {
            return false;
        };
        match want.parse::<i64>() {
            Ok(want) if self.op == LabelOp::GreaterThan => have > want,
            Ok(want) => have < want,
            Err(_) => false,
        }
    }
}

fn operator_arity_errors(op: LabelOp, values: &[String]) -> Vec<String> {
    let shown = go_string_slice(values);
    match op {
        LabelOp::In | LabelOp::NotIn if values.is_empty() => {
            vec![invalid("values", &shown, "for 'in', 'notin' operators, values set can't be empty")]
        }
        LabelOp::Equals | LabelOp::DoubleEquals | LabelOp::NotEquals if values.len() != 1 => {
            vec![invalid("values", &shown, "exact-match compatibility requires one single value")]
        }
        LabelOp::Exists | LabelOp::DoesNotExist if !values.is_empty() => {
            vec![invalid("values", &shown, "values set must be empty for exists and does not exist")]
        }
        LabelOp::GreaterThan | LabelOp::LessThan => integer_value_errors(values, &shown),
        _ => Vec::new(),
    }
}

fn integer_value_errors(values: &[String], shown: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if values.len() != 1 {
        errs.push(invalid("values", shown, "for 'Gt', 'Lt' operators, exactly one value is required"));
    }
    for (i, v) in values.iter().enumerate() {
        if v.parse::<i64>().is_err() {
            let detail = "for 'Gt', 'Lt' operators, the value must be an integer";
            errs.push(invalid(&format!("values[{i}]"), &quote(v), detail));
        }
    }
    errs
}

impl fmt::Display for Requirement {
    /// `Requirement.String()`: `!k`, `k`, `k=v`, `k==v`, `k!=v`, `k>n`, `k<n`,
    /// `k in (a,b)`, `k notin (a,b)`, with the values sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == LabelOp::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            LabelOp::Exists | LabelOp::DoesNotExist => return Ok(()),
            LabelOp::Equals => "=",
            LabelOp::DoubleEquals => "==",
            LabelOp::NotEquals => "!=",
            LabelOp::In => " in ",
            LabelOp::NotIn => " notin ",
            LabelOp::GreaterThan => ">",
            LabelOp::LessThan => "<",
        };
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        let joined = values.join(",");
        match self.op {
            LabelOp::In | LabelOp::NotIn => write!(f, "{op}({joined})"),
            _ => write!(f, "{op}{joined}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// A label selector: a conjunction of requirements, or the selector that matches nothing.
///
/// The empty selector matches everything. Requirements are kept sorted by key, as upstream
/// does, so the canonical string (`Display`) is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object (`labels.Everything()`).
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// The selector that matches no object (`labels.Nothing()`).
    pub fn nothing() -> LabelSelector {
        LabelSelector { requirements: Vec::new(), nothing: true }
    }

    /// Parses the string syntax of `labels.Parse`: comma-separated requirements `a=b`,
    /// `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`. Whitespace
    /// between tokens is ignored. An empty string selects everything.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut requirements = Parser::new(s).parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// Converts a `metav1.LabelSelector` object (`metav1.LabelSelectorAsSelector`).
    ///
    /// `null` selects nothing; `{}` (no matchLabels and no matchExpressions) selects
    /// everything, as upstream.
    pub fn from_json(v: &Value) -> Result<LabelSelector, String> {
        let obj = match v {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(obj) => obj,
            other => return Err(format!("label selector must be an object, not {other}")),
        };
        let mut requirements = match_labels(obj.get("matchLabels"))?;
        requirements.extend(match_expressions(obj.get("matchExpressions"))?);
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// A selector requiring every `key=value` of a map (`labels.SelectorFromSet`), as used
    /// by ReplicationController and Service selectors. Invalid keys or values are an error.
    pub fn from_map(labels: &Map<String, Value>) -> Result<LabelSelector, String> {
        let mut requirements = match_labels(Some(&Value::Object(labels.clone())))?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True for the selector that matches everything (no requirements).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the selector that matches nothing.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// Whether an object's `metadata.labels` satisfy the selector. Labels whose value is not
    /// a string count as absent.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.matches_fn(|k| labels.get(k).and_then(Value::as_str))
    }

    /// Whether a label map satisfies the selector.
    pub fn matches_btree(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_fn(|k| labels.get(k).map(String::as_str))
    }

    /// Whether the labels seen through `get` satisfy the selector.
    pub fn matches_fn<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches_fn(&get))
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string: requirements sorted by key, joined by `,`. Both the empty
    /// selector and the nothing selector render as the empty string, as upstream.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

fn match_labels(v: Option<&Value>) -> Result<Vec<Requirement>, String> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(format!("matchLabels must be an object, not {other}")),
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let Some(v) = v.as_str() else {
            return Err(format!("matchLabels[{k}] must be a string, not {v}"));
        };
        out.push(Requirement::new(k, LabelOp::Equals, vec![v.to_string()])?);
    }
    Ok(out)
}

fn match_expressions(v: Option<&Value>) -> Result<Vec<Requirement>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("matchExpressions must be a list, not {other}")),
    };
    list.iter().map(match_expression).collect()
}

fn match_expression(expr: &Value) -> Result<Requirement, String> {
    let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
    let operator = expr.get("operator").and_then(Value::as_str).unwrap_or_default();
    let op = match operator {
        "In" => LabelOp::In,
        "NotIn" => LabelOp::NotIn,
        "Exists" => LabelOp::Exists,
        "DoesNotExist" => LabelOp::DoesNotExist,
        other => {
            return Err(format!("{} is not a valid label selector operator", quote(other)));
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(value_string).collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!("matchExpressions values must be a list, not {other}"));
        }
    };
    Requirement::new(key, op, values)
}

fn value_string(v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_string).ok_or_else(|| format!("label selector values must be strings, not {v}"))
}

// ---------------------------------------------------------------------------------------------
// The label selector lexer and parser (a port of apimachinery's labels.Parser)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Identifier,
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    DoesNotExist,
    OpenPar,
    ClosedPar,
    Comma,
    End,
}

/// In `Values` context the keywords `in` and `notin` are plain identifiers (a key or a
/// value may be called `in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens, always ending with `End`.
fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        let Some(&c) = b.get(pos) else {
            out.push((Token::End, String::new()));
            return out;
        };
        let start = pos;
        let token = if is_special(c) {
            let (token, len) = special_symbol(&b[pos..]);
            pos += len;
            token
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            keyword(&s[start..pos])
        };
        // Token boundaries are ASCII bytes, so the slice is on char boundaries.
        out.push((token, s[start..pos].to_string()));
    }
}

/// The longest symbol at the start of `b` (which begins with a special byte).
fn special_symbol(b: &[u8]) -> (Token, usize) {
    match b {
        [b'=', b'=', ..] => (Token::DoubleEquals, 2),
        [b'!', b'=', ..] => (Token::NotEquals, 2),
        [b'=', ..] => (Token::Equals, 1),
        [b'!', ..] => (Token::DoesNotExist, 1),
        [b'(', ..] => (Token::OpenPar, 1),
        [b')', ..] => (Token::ClosedPar, 1),
        [b'>', ..] => (Token::GreaterThan, 1),
        [b'<', ..] => (Token::LessThan, 1),
        _ => (Token::Comma, 1),
    }
}

fn keyword(word: &str) -> Token {
    match word {
        "in" => Token::In,
        "notin" => Token::NotIn,
        _ => Token::Identifier,
    }
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn new(s: &str) -> Parser {
        Parser { items: lex(s), pos: 0 }
    }

    fn item(&self, pos: usize, ctx: Context) -> (Token, String) {
        let last = self.items.len().saturating_sub(1);
        let (token, lit) = self.items.get(pos.min(last)).cloned().unwrap_or((Token::End, String::new()));
        match token {
            Token::In | Token::NotIn if ctx == Context::Values => (Token::Identifier, lit),
            _ => (token, lit),
        }
    }

    fn lookahead(&self, ctx: Context) -> (Token, String) {
        self.item(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let item = self.item(self.pos, ctx);
        self.pos += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, lit) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    if self.after_requirement()? {
                        return Ok(requirements);
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(format!("found '{lit}', expected: !, identifier, or 'end of string'"));
                }
            }
        }
    }

    /// Consumes what follows a requirement; true at the end of the string.
    fn after_requirement(&mut self) -> Result<bool, String> {
        let (token, lit) = self.consume(Context::Values);
        match token {
            Token::End => Ok(true),
            Token::Comma => {
                let (next, next_lit) = self.lookahead(Context::Values);
                if next != Token::Identifier && next != Token::DoesNotExist {
                    return Err(format!("found '{next_lit}', expected: identifier after ','"));
                }
                Ok(false)
            }
            _ => Err(format!("found '{lit}', expected: ',' or 'end of string'")),
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, unary) = self.parse_key_and_infer_operator()?;
        if let Some(op) = unary {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let mut values = match op {
            LabelOp::In | LabelOp::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        values.sort();
        values.dedup();
        Requirement::new(&key, op, values)
    }

    /// The key, and the operator when it is unary (`!key`, or `key` followed by `,` or end).
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<LabelOp>), String> {
        let (mut token, mut lit) = self.consume(Context::Values);
        let mut op = None;
        if token == Token::DoesNotExist {
            op = Some(LabelOp::DoesNotExist);
            (token, lit) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = label_key_errors(&lit);
        if !errs.is_empty() {
            return Err(invalid("<nil>", &quote(&lit), &errs.join("; ")));
        }
        let (next, _) = self.lookahead(Context::Values);
        if op.is_none() && matches!(next, Token::End | Token::Comma) {
            op = Some(LabelOp::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<LabelOp, String> {
        let (token, lit) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => LabelOp::In,
            Token::NotIn => LabelOp::NotIn,
            Token::Equals => LabelOp::Equals,
            Token::DoubleEquals => LabelOp::DoubleEquals,
            Token::NotEquals => LabelOp::NotEquals,
            Token::GreaterThan => LabelOp::GreaterThan,
            Token::LessThan => LabelOp::LessThan,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (token, lit) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (token, lit) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                if self.consume(Context::Values).0 != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// The values inside `( … )`; empty entries (`(,a)`, `(a,,b)`, `(a,)`) stand for "".
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let (token, lit) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.push(lit);
                    let (next, next_lit) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{next_lit}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedPar => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if matches!(token, Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        let (token, lit) = self.consume(Context::Values);
        if token == Token::Identifier {
            return Ok(vec![lit]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// The operator of one field requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOp {
    /// `field=value` or `field==value`
    Equals,
    /// `field!=value`
    NotEquals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    value: String,
}

/// A field selector (`fields.Selector`): a conjunction of `field=value` and
/// `field!=value` terms. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// Parses `fields.ParseSelector` syntax: comma-separated `a=b`, `a==b`, `a!=b`. Values
    /// may escape `\,`, `\=` and `\\`; an unescaped `,` splits terms and an unescaped `=`
    /// inside a value is an error. Whitespace is significant, as upstream.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::with_capacity(parts.len());
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((field, op, raw)) = split_term(part) else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            terms.push(FieldTerm { field: field.to_string(), op, value: unescape_value(raw)? });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector has no terms and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether an object matches, with `get` reading a field's value. A field `get` does not
    /// know reads as the empty string, as upstream's `fields.Set` does.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let have = get(&t.field).unwrap_or_default();
            (have == t.value) == (t.op == FieldOp::Equals)
        })
    }

    /// The terms as `(field, operator, value)`, values unescaped, in canonical order.
    pub fn requirements(&self) -> impl Iterator<Item = (&str, FieldOp, &str)> + '_ {
        self.terms.iter().map(|t| (t.field.as_str(), t.op, t.value.as_str()))
    }

    /// The value a `field=value` term requires, if any (`RequiresExactMatch`), used to
    /// narrow a list to one name or namespace.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|t| t.op == FieldOp::Equals && t.field == field).map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string: terms joined by `,`, values escaped, `==` shown as `=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.op == FieldOp::Equals { "=" } else { "!=" };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped by a backslash (the backslash is kept).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator; `!=` and `==` win over `=` at the same position.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [("!=", FieldOp::NotEquals), ("==", FieldOp::Equals), ("=", FieldOp::Equals)] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!("invalid field selector: invalid escape sequence: \\{c}"));
            }
            out.push(c);
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' || c == '=' {
            return Err(format!("invalid field selector: unescaped character in value: {c}"));
        } else {
            out.push(c);
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// Escapes `\`, `,` and `=` so a value can be written back into a selector string.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn parse(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parses_set_based_and_negated_requirements() {
        let sel = parse("tier in (web, db),!canary");
        assert_eq!(sel.to_string(), "!canary,tier in (db,web)");
        assert!(sel.matches(&labels(json!({"tier": "web"}))));
        assert!(sel.matches(&labels(json!({"tier": "db", "x": "y"}))));
        assert!(!sel.matches(&labels(json!({"tier": "web", "canary": "true"}))));
        assert!(!sel.matches(&labels(json!({"tier": "cache"}))));
        assert!(!sel.matches(&labels(json!({}))));
    }

    #[test]
    fn equality_inequality_and_existence() {
        let sel = parse(" app = web ,env!=prod, release ,track==stable");
        assert_eq!(sel.to_string(), "app=web,env!=prod,release,track==stable");
        let ok = labels(json!({"app": "web", "release": "1", "track": "stable"}));
        assert!(sel.matches(&ok));
        let prod = labels(json!({"app": "web", "env": "prod", "release": "1", "track": "stable"}));
        assert!(!sel.matches(&prod));
        let no_release = labels(json!({"app": "web", "track": "stable"}));
        assert!(!sel.matches(&no_release));
    }

    #[test]
    fn notin_matches_absent_labels() {
        let sel = parse("env notin (prod,staging)");
        assert!(sel.matches(&labels(json!({}))));
        assert!(sel.matches(&labels(json!({"env": "dev"}))));
        assert!(!sel.matches(&labels(json!({"env": "prod"}))));
    }

    #[test]
    fn keywords_may_be_keys_and_values() {
        let sel = parse("in in (in,notin)");
        assert!(sel.matches(&labels(json!({"in": "notin"}))));
        assert_eq!(sel.to_string(), "in in (in,notin)");
        assert_eq!(parse("notin").to_string(), "notin");
    }

    #[test]
    fn empty_values_and_empty_sets() {
        assert!(parse("a=").matches(&labels(json!({"a": ""}))));
        assert!(!parse("a=").matches(&labels(json!({}))));
        assert!(parse("a in ()").matches(&labels(json!({"a": ""}))));
        let sel = parse("a in (,x)");
        assert_eq!(sel.requirements()[0].values(), ["", "x"]);
        assert_eq!(parse("a in (x,,y)").requirements()[0].values(), ["", "x", "y"]);
        assert_eq!(parse("a in (x,)").requirements()[0].values(), ["", "x"]);
    }

    #[test]
    fn integer_comparisons() {
        let sel = parse("replicas>2,cost<10");
        assert!(sel.matches(&labels(json!({"replicas": "3", "cost": "9"}))));
        assert!(!sel.matches(&labels(json!({"replicas": "2", "cost": "9"}))));
        assert!(!sel.matches(&labels(json!({"replicas": "x", "cost": "9"}))));
        assert_eq!(sel.to_string(), "cost<10,replicas>2");
        let err = LabelSelector::parse("a>b").unwrap_err();
        assert!(err.contains("for 'Gt', 'Lt' operators, the value must be an integer"), "{err}");
    }

    #[test]
    fn empty_string_selects_everything() {
        let sel = parse("");
        assert!(sel.is_empty());
        assert!(sel.matches(&labels(json!({"any": "thing"}))));
        assert_eq!(parse("   ").to_string(), "");
    }

    #[test]
    fn syntax_errors_read_like_upstream() {
        let cases = [
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ("a,", "found '', expected: identifier after ','"),
            (",a", "found ',', expected: !, identifier, or 'end of string'"),
            ("a in x", "unable to parse requirement: found 'x' expected: '('"),
            ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("a=(", "unable to parse requirement: found '(', expected: identifier"),
            ("a in (x)(", "found '(', expected: ',' or 'end of string'"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
        ];
        for (input, want) in cases {
            assert_eq!(LabelSelector::parse(input).unwrap_err(), want, "{input:?}");
        }
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        let err = LabelSelector::parse("-a=b").unwrap_err();
        assert!(
            err.starts_with("unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of"),
            "{err}"
        );
        let err = LabelSelector::parse("a=b c d").unwrap_err();
        assert_eq!(err, "found 'c', expected: ',' or 'end of string'");
        let err = LabelSelector::parse("a=-b").unwrap_err();
        assert!(err.contains("values[0][a]: Invalid value: \"-b\": a valid label must be an empty string"), "{err}");
        let err = LabelSelector::parse("example.com/").unwrap_err();
        assert!(err.contains("name part must be non-empty"), "{err}");
        let err = LabelSelector::parse("Example.com/x").unwrap_err();
        assert!(err.contains("prefix part a lowercase RFC 1123 subdomain"), "{err}");
        let long = "a".repeat(64);
        let err = LabelSelector::parse(&format!("k={long}")).unwrap_err();
        assert!(err.contains("must be no more than 63 characters"), "{err}");
        assert!(LabelSelector::parse("app.kubernetes.io/name=web").is_ok());
    }

    #[test]
    fn from_json_empty_is_everything_and_null_is_nothing() {
        let everything = LabelSelector::from_json(&json!({})).unwrap();
        assert!(everything.is_empty());
        assert!(everything.matches(&labels(json!({"a": "b"}))));
        let nothing = LabelSelector::from_json(&Value::Null).unwrap();
        assert!(nothing.is_nothing() && !nothing.is_empty());
        assert!(!nothing.matches(&labels(json!({}))));
        assert_eq!(nothing.to_string(), "");
        let empty_parts = LabelSelector::from_json(&json!({"matchLabels": {}, "matchExpressions": []})).unwrap();
        assert!(empty_parts.is_empty());
    }

    #[test]
    fn from_json_renders_like_kubectl_selector_column() {
        let sel = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "owner", "operator": "Exists"},
                {"key": "zone", "operator": "In", "values": ["b", "a"]}
            ]
        }))
        .unwrap();
        assert_eq!(sel.to_string(), "app=web,!canary,env notin (dev,prod),owner,tier=front,zone in (a,b)");
        let pod = labels(json!({"app": "web", "tier": "front", "owner": "me", "zone": "a"}));
        assert!(sel.matches(&pod));
        let mut btree = BTreeMap::new();
        for (k, v) in &pod {
            btree.insert(k.clone(), v.as_str().unwrap().to_string());
        }
        assert!(sel.matches_btree(&btree));
        btree.insert("canary".into(), "1".into());
        assert!(!sel.matches_btree(&btree));
    }

    #[test]
    fn from_json_errors() {
        let err = LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "Equals"}]}));
        assert_eq!(err.unwrap_err(), "\"Equals\" is not a valid label selector operator");
        let err =
            LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}));
        assert_eq!(
            err.unwrap_err(),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        let err = LabelSelector::from_json(
            &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        );
        assert!(err.unwrap_err().contains("values set must be empty for exists and does not exist"));
        let err = LabelSelector::from_json(&json!({"matchLabels": {"a b": "c"}})).unwrap_err();
        assert!(err.starts_with("key: Invalid value: \"a b\": name part must consist of"), "{err}");
        assert!(LabelSelector::from_json(&json!({"matchLabels": {"a": 1}})).is_err());
        assert!(LabelSelector::from_json(&json!("a=b")).is_err());
    }

    #[test]
    fn non_string_label_values_count_as_absent() {
        let sel = parse("a");
        assert!(!sel.matches(&labels(json!({"a": 1}))));
        assert!(parse("!a").matches(&labels(json!({"a": null}))));
    }

    #[test]
    fn from_map_selects_every_pair() {
        let sel = LabelSelector::from_map(&labels(json!({"b": "2", "a": "1"}))).unwrap();
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(LabelSelector::from_map(&labels(json!({}))).unwrap().is_empty());
    }

    #[test]
    fn unicode_and_odd_input_never_panics() {
        for s in ["ä=ö", "a=ä", "(((", ")))", "!!a", "a!==b", "a in (ä)", "\u{0}", "a\u{0}=b", "=", "a==", "a in"] {
            let _ = LabelSelector::parse(s);
        }
        assert_eq!(parse("a==").to_string(), "a==");
    }

    #[test]
    fn field_selector_parses_and_matches() {
        let sel = FieldSelector::parse("status.phase!=Running,spec.nodeName==node-1").unwrap();
        assert_eq!(sel.to_string(), "spec.nodeName=node-1,status.phase!=Running");
        let get = |phase: &'static str| {
            move |f: &str| match f {
                "spec.nodeName" => Some("node-1".to_string()),
                "status.phase" => Some(phase.to_string()),
                _ => None,
            }
        };
        assert!(sel.matches(get("Pending")));
        assert!(!sel.matches(get("Running")));
        let reqs: Vec<_> = sel.requirements().collect();
        assert_eq!(
            reqs,
            [("spec.nodeName", FieldOp::Equals, "node-1"), ("status.phase", FieldOp::NotEquals, "Running")]
        );
        assert_eq!(sel.exact("spec.nodeName"), Some("node-1"));
        assert_eq!(sel.exact("status.phase"), None);
    }

    #[test]
    fn field_selector_missing_field_is_empty_string() {
        let sel = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(sel.matches(|_| None));
        let sel = FieldSelector::parse("spec.nodeName!=").unwrap();
        assert!(!sel.matches(|_| None));
        assert!(sel.matches(|_| Some("n1".into())));
    }

    #[test]
    fn field_selector_escapes() {
        let sel = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,metadata.namespace=x").unwrap();
        assert_eq!(sel.exact("metadata.name"), Some(r"a,b=c\d"));
        assert_eq!(sel.exact("metadata.namespace"), Some("x"));
        assert_eq!(sel.to_string(), r"metadata.name=a\,b\=c\\d,metadata.namespace=x");
        assert_eq!(FieldSelector::parse(&sel.to_string()).unwrap(), sel);
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(FieldSelector::parse("a").unwrap_err(), "invalid selector: 'a'; can't understand 'a'");
        assert_eq!(FieldSelector::parse("a=b,c").unwrap_err(), "invalid selector: 'a=b,c'; can't understand 'c'");
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err(),
            "invalid field selector: unescaped character in value: ="
        );
        assert_eq!(FieldSelector::parse(r"a=b\x").unwrap_err(), r"invalid field selector: invalid escape sequence: \x");
        assert_eq!(FieldSelector::parse(r"a=b\").unwrap_err(), r"invalid field selector: invalid escape sequence: \");
    }

    #[test]
    fn field_selector_empty_and_whitespace() {
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
        // Whitespace is part of the field and value, as upstream.
        let sel = FieldSelector::parse("a = b").unwrap();
        assert_eq!(sel.requirements().next(), Some(("a ", FieldOp::Equals, " b")));
        let sel = FieldSelector::parse("a=b,a=c").unwrap();
        assert_eq!(sel.exact("a"), Some("b"));
        assert!(!sel.matches(|_| Some("b".into())));
    }
}
