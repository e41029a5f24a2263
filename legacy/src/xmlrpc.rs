//! XML-RPC, as xapi writes and reads it (docs/smapiv1.md): the `methodCall` a legacy driver
//! gets in argv\[1\], the `methodResponse` it prints, and the XenAPI calls it makes back.
//!
//! The parser reads the XML subset XML-RPC uses: elements, text, the five predefined
//! entities and numeric character references, CDATA, comments, an optional declaration.
//! Whitespace-only text between elements is dropped. Values accept every string form xapi
//! and Python emit: `<value>x</value>`, `<value><string>x</string></value>`, `<value/>`,
//! `<value><string/></value>`. Input size and nesting are bounded so hostile input cannot
//! exhaust memory or the stack.

use std::fmt::Write as _;

/// The deepest element nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// The largest document accepted (bytes).
pub const MAX_LEN: usize = 16 << 20;

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<string>` or an untyped value.
    String(String),
    /// `<int>`/`<i4>`/`<i8>`.
    Int(i64),
    /// `<boolean>`: xapi reads anything but `0` as true; we print `0`/`1`.
    Bool(bool),
    /// `<double>`.
    Double(f64),
    /// `<nil/>`.
    Nil,
    /// `<dateTime.iso8601>`.
    DateTime(String),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<struct>`, members in document order.
    Struct(Vec<(String, Value)>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A struct member by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The members, if this is a struct.
    pub fn members(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Struct(m) => Some(m),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Writes the value as `<value>…</value>`.
    pub fn write(&self, out: &mut String) {
        out.push_str("<value>");
        match self {
            Value::String(s) => {
                out.push_str("<string>");
                escape_into(out, s);
                out.push_str("</string>");
            }
            Value::Int(i) => {
                let _ = write!(out, "<int>{i}</int>");
            }
            Value::Bool(b) => {
                let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
            }
            Value::Double(d) => {
                let _ = write!(out, "<double>{d}</double>");
            }
            Value::Nil => out.push_str("<nil/>"),
            Value::DateTime(d) => {
                out.push_str("<dateTime.iso8601>");
                escape_into(out, d);
                out.push_str("</dateTime.iso8601>");
            }
            Value::Array(items) => {
                out.push_str("<array><data>");
                for item in items {
                    item.write(out);
                }
                out.push_str("</data></array>");
            }
            Value::Struct(members) => {
                out.push_str("<struct>");
                for (name, value) in members {
                    out.push_str("<member><name>");
                    escape_into(out, name);
                    out.push_str("</name>");
                    value.write(out);
                    out.push_str("</member>");
                }
                out.push_str("</struct>");
            }
        }
        out.push_str("</value>");
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML-RPC at byte {at}: {reason}")]
pub struct ParseError {
    /// Where the problem was found.
    pub at: usize,
    /// What is wrong.
    pub reason: String,
}

/// A parsed XML element: name, children, text.
#[derive(Debug, Clone, PartialEq)]
struct Element {
    name: String,
    children: Vec<Element>,
    text: String,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: impl Into<String>) -> ParseError {
        ParseError { at: self.pos, reason: reason.into() }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_misc(&mut self) -> Result<(), ParseError> {
        loop {
            let trimmed = self.rest().trim_start();
            self.pos = self.src.len() - trimmed.len();
            if trimmed.starts_with("<?") {
                let end = trimmed.find("?>").ok_or_else(|| self.err("unterminated declaration"))?;
                self.pos += end + 2;
            } else if trimmed.starts_with("<!--") {
                let end = trimmed.find("-->").ok_or_else(|| self.err("unterminated comment"))?;
                self.pos += end + 3;
            } else {
                return Ok(());
            }
        }
    }

    fn element(&mut self, depth: usize) -> Result<Element, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        if !self.rest().starts_with('<') {
            return Err(self.err("expected an element"));
        }
        self.pos += 1;
        let name_len = self
            .rest()
            .find(|c: char| c == '>' || c == '/' || c.is_whitespace())
            .ok_or_else(|| self.err("unterminated tag"))?;
        let name = self.rest()[..name_len].to_owned();
        if name.is_empty() {
            return Err(self.err("empty element name"));
        }
        self.pos += name_len;
        let close = self.rest().find('>').ok_or_else(|| self.err("unterminated tag"))?;
        let attrs = &self.rest()[..close];
        self.pos += close + 1;
        let mut element = Element { name, children: Vec::new(), text: String::new() };
        if attrs.trim_end().ends_with('/') {
            return Ok(element);
        }
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return Err(self.err(format!("unterminated element <{}>", element.name)));
            }
            if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').ok_or_else(|| self.err("unterminated end tag"))?;
                if after[..end].trim() != element.name {
                    return Err(self.err(format!("</{}> closes <{}>", after[..end].trim(), element.name)));
                }
                self.pos += 2 + end + 1;
                if !element.children.is_empty() && element.text.trim().is_empty() {
                    element.text.clear();
                }
                return Ok(element);
            }
            if rest.starts_with("<!--") {
                let end = rest.find("-->").ok_or_else(|| self.err("unterminated comment"))?;
                self.pos += end + 3;
            } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
                let end = after.find("]]>").ok_or_else(|| self.err("unterminated CDATA"))?;
                element.text.push_str(&after[..end]);
                self.pos += 9 + end + 3;
            } else if rest.starts_with('<') {
                let child = self.element(depth + 1)?;
                element.children.push(child);
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = unescape(&rest[..end]).ok_or_else(|| self.err("bad entity"))?;
                element.text.push_str(&text);
                self.pos += end;
            }
        }
    }
}

fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';')?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// True for the characters XML 1.0 allows in a document (`Char`): tab, newline, carriage
/// return, and everything from U+0020 but U+FFFE and U+FFFF (Rust has no surrogates).
/// Others cannot even be written as character references: xapi's parser refuses them.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Escapes text for element content (what xapi escapes, plus `'`). A character XML cannot
/// carry becomes U+FFFD, so the document stays well-formed whatever the text holds.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if !is_xml_char(c) => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
}

fn document(text: &str) -> Result<Element, ParseError> {
    if text.len() > MAX_LEN {
        return Err(ParseError { at: 0, reason: format!("document larger than {MAX_LEN} bytes") });
    }
    let mut p = Parser { src: text, pos: 0 };
    p.skip_misc()?;
    let root = p.element(0)?;
    p.skip_misc()?;
    Ok(root)
}

fn child<'e>(e: &'e Element, name: &str) -> Result<&'e Element, ParseError> {
    e.children
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ParseError { at: 0, reason: format!("<{}> has no <{name}>", e.name) })
}

fn value(e: &Element) -> Result<Value, ParseError> {
    let bad = |reason: String| ParseError { at: 0, reason };
    if e.name != "value" {
        return Err(bad(format!("expected <value>, found <{}>", e.name)));
    }
    let Some(typed) = e.children.first() else { return Ok(Value::String(e.text.clone())) };
    if e.children.len() > 1 {
        return Err(bad("a <value> holds one typed element".to_owned()));
    }
    let text = typed.text.trim();
    Ok(match typed.name.as_str() {
        "string" => Value::String(typed.text.clone()),
        "int" | "i4" | "i8" => Value::Int(text.parse().map_err(|_| bad(format!("bad integer {text:?}")))?),
        "boolean" => Value::Bool(text != "0"),
        "double" => Value::Double(text.parse().map_err(|_| bad(format!("bad double {text:?}")))?),
        "nil" => Value::Nil,
        "dateTime.iso8601" => Value::DateTime(text.to_owned()),
        "base64" => Value::String(text.to_owned()),
        "array" => {
            let data = child(typed, "data")?;
            Value::Array(data.children.iter().map(value).collect::<Result<_, _>>()?)
        }
        "struct" => Value::Struct(
            typed
                .children
                .iter()
                .map(|m| {
                    if m.name != "member" {
                        return Err(bad(format!("expected <member>, found <{}>", m.name)));
                    }
                    Ok((child(m, "name")?.text.clone(), value(child(m, "value")?)?))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(bad(format!("unknown value type <{other}>"))),
    })
}

/// Parses a `methodCall`: its method name and parameters.
pub fn parse_call(text: &str) -> Result<(String, Vec<Value>), ParseError> {
    let root = document(text)?;
    if root.name != "methodCall" {
        return Err(ParseError { at: 0, reason: format!("expected <methodCall>, found <{}>", root.name) });
    }
    let name = child(&root, "methodName")?.text.trim().to_owned();
    let params = match root.children.iter().find(|c| c.name == "params") {
        Some(p) => p.children.iter().map(|param| value(child(param, "value")?)).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok((name, params))
}

/// A fault in a `methodResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `faultCode`.
    pub code: i64,
    /// `faultString`.
    pub string: String,
}

/// Parses a `methodResponse`: its one value, or its fault.
pub fn parse_response(text: &str) -> Result<Result<Value, Fault>, ParseError> {
    let root = document(text)?;
    if root.name != "methodResponse" {
        return Err(ParseError { at: 0, reason: format!("expected <methodResponse>, found <{}>", root.name) });
    }
    if let Some(fault) = root.children.iter().find(|c| c.name == "fault") {
        let v = value(child(fault, "value")?)?;
        let code = match v.get("faultCode") {
            Some(Value::Int(c)) => *c,
            _ => return Err(ParseError { at: 0, reason: "faultCode is not an integer".to_owned() }),
        };
        let string = v.get("faultString").and_then(Value::as_str).unwrap_or_default().to_owned();
        return Ok(Err(Fault { code, string }));
    }
    let params = child(&root, "params")?;
    match params.children.as_slice() {
        [param] => Ok(Ok(value(child(param, "value")?)?)),
        _ => Err(ParseError { at: 0, reason: "expected exactly one <param>".to_owned() }),
    }
}

/// A `methodResponse` carrying `value`.
pub fn response(value: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodResponse><params><param>");
    value.write(&mut out);
    out.push_str("</param></params></methodResponse>");
    out
}

/// A `methodResponse` carrying a fault.
pub fn fault(code: i64, string: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodResponse><fault>");
    Value::Struct(vec![("faultCode".to_owned(), Value::Int(code)), ("faultString".to_owned(), Value::str(string))])
        .write(&mut out);
    out.push_str("</fault></methodResponse>");
    out
}

/// A `methodCall` (for XenAPI calls).
pub fn call(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodCall><methodName>");
    escape_into(&mut out, method);
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        p.write(&mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sr_create document exactly as xapi v24.19.2 writes it (docs/smapiv1.md §5).
    const SR_CREATE: &str = "<methodCall><methodName>sr_create</methodName><params><param><value><struct><member><name>host_ref</name><value>OpaqueRef:5d8e2c17-3b3c-4f0e-9a52-0c2f6a1b9e01</value></member><member><name>command</name><value>sr_create</value></member><member><name>args</name><value><array><data><value>0</value></data></array></value></member><member><name>device_config</name><value><struct><member><name>SRmaster</name><value>true</value></member><member><name>pool</name><value>xcp</value></member><member><name>ceph_conf</name><value>/etc/ceph/ceph.conf</value></member><member><name>ceph_user</name><value>admin</value></member></struct></value></member><member><name>session_ref</name><value>OpaqueRef:9c1b7e44-0d2a-4c61-b7f3-6e5a2d8f1c30</value></member><member><name>sr_ref</name><value>OpaqueRef:2f4a6c8e-1b3d-4e5f-8a7b-9c0d1e2f3a4b</value></member><member><name>sr_uuid</name><value>3f6c1b0e-8a1e-4d7e-9a53-2b8f4c3c9f10</value></member><member><name>subtask_of</name><value>DummyRef:|a1b2c3d4-0002-4000-8000-000000000002|SR.create</value></member></struct></value></param></params></methodCall>";

    #[test]
    fn reads_xapis_request_documents() {
        let (name, params) = parse_call(SR_CREATE).expect("parses");
        assert_eq!(name, "sr_create");
        let req = &params[0];
        assert_eq!(req.get("args").and_then(Value::items), Some(&[Value::str("0")][..]));
        assert_eq!(req.get("device_config").and_then(|d| d.get("pool")), Some(&Value::str("xcp")));
        assert_eq!(
            req.get("subtask_of").and_then(Value::as_str),
            Some("DummyRef:|a1b2c3d4-0002-4000-8000-000000000002|SR.create")
        );
    }

    #[test]
    fn every_string_form_is_accepted() {
        let doc = "<?xml version='1.0'?>\n<methodCall>\n <methodName>x</methodName>\n <params><param><value><array><data>\n  <value>a &amp; b</value><value><string>c&#65;&#x42;</string></value><value/><value><string/></value>\n  <value><![CDATA[<raw>]]></value><value>  spaced  </value>\n</data></array></value></param></params></methodCall>";
        let (_, params) = parse_call(doc).expect("parses");
        let items: Vec<&str> = params[0].items().expect("array").iter().filter_map(Value::as_str).collect();
        assert_eq!(items, ["a & b", "cAB", "", "", "<raw>", "  spaced  "]);
    }

    #[test]
    fn responses_round_trip() {
        let v = Value::Struct(vec![
            ("uuid".to_owned(), Value::str("u<&>\"'")),
            ("o_direct".to_owned(), Value::Bool(true)),
            ("list".to_owned(), Value::Array(vec![Value::Int(-3), Value::Nil])),
            ("empty".to_owned(), Value::Struct(Vec::new())),
        ]);
        assert_eq!(parse_response(&response(&v)), Ok(Ok(v)));
        assert_eq!(parse_response(&fault(24, "in use")), Ok(Err(Fault { code: 24, string: "in use".to_owned() })));
        assert!(response(&Value::Nil).contains("<value><nil/></value>"));
    }

    /// Issue 14 item 5: text holding characters XML cannot carry still makes a well-formed
    /// document.
    #[test]
    fn control_characters_never_reach_a_document() {
        let doc = fault(143, "bad \u{1}\u{1b}[31m\u{0}\u{FFFF} input\r\n\tok");
        assert!(doc.chars().all(is_xml_char), "{doc:?}");
        let parsed = parse_response(&doc).expect("parses").expect_err("a fault");
        assert_eq!(parsed.string, "bad \u{FFFD}\u{FFFD}[31m\u{FFFD}\u{FFFD} input\r\n\tok");
    }

    #[test]
    fn malformed_documents_are_refused() {
        for doc in [
            "",
            "not xml",
            "<methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value><int>z</int></value></param></params></methodCall>",
            "<methodCall><methodName>x</wrong></methodCall>",
            "<methodResponse><params></params></methodResponse>",
            "<a>&bogus;</a>",
        ] {
            assert!(parse_call(doc).is_err() || parse_response(doc).is_err(), "{doc:?}");
        }
        let deep = "<value><array><data>".repeat(100);
        assert!(parse_call(&format!("<methodCall><methodName>x</methodName><params><param>{deep}")).is_err());
    }
}
