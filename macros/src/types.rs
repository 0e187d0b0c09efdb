//! Reading Rust types: which conversion they take, and their names in
//! signatures.
//!
//! The macro sees types as written, so it recognizes them by their last
//! path segment: `CallContext`, `ObjectRef`, `RemoteObject`, `Value`,
//! `Arc<dyn Object>`, `Option<T>`, `Result<T, E>` and the standard scalar
//! and collection types. A type alias of one of these is an ordinary
//! value type to it.

use syn::{GenericArgument, PathArguments, Type};

/// How a value of a type crosses the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Through the serde mapping (`FromEntity` / `IntoEntity`), `Value`
    /// included.
    Plain,
    /// `ObjectRef`: a reference, local or remote.
    ObjectRef,
    /// `RemoteObject`: a proxy for the peer's object.
    Remote,
    /// `Arc<dyn Object>`: something callable.
    Object,
}

fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip(&p.elem),
        Type::Group(g) => strip(&g.elem),
        _ => ty,
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match strip(ty) {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

fn type_args(seg: &syn::PathSegment) -> Vec<&Type> {
    match &seg.arguments {
        PathArguments::AngleBracketed(ab) => ab
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_named(ty: &Type, name: &str) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == name)
}

/// `CallContext` or `&CallContext`.
pub fn is_context(ty: &Type) -> bool {
    match strip(ty) {
        Type::Reference(r) => r.mutability.is_none() && is_named(&r.elem, "CallContext"),
        other => is_named(other, "CallContext"),
    }
}

/// `()`.
pub fn is_unit(ty: &Type) -> bool {
    matches!(strip(ty), Type::Tuple(t) if t.elems.is_empty())
}

/// `Arc<dyn Object>` (with any path to `Object`, and `+ Send` etc.).
fn is_dyn_object(ty: &Type) -> bool {
    let Some(seg) = last_segment(ty) else {
        return false;
    };
    if seg.ident != "Arc" {
        return false;
    }
    match type_args(seg).as_slice() {
        [inner] => match strip(inner) {
            Type::TraitObject(t) => t.bounds.iter().any(|b| match b {
                syn::TypeParamBound::Trait(tb) => {
                    tb.path.segments.last().is_some_and(|s| s.ident == "Object")
                }
                _ => false,
            }),
            _ => false,
        },
        _ => false,
    }
}

/// How `ty` converts.
pub fn kind(ty: &Type) -> Kind {
    if is_dyn_object(ty) {
        Kind::Object
    } else if is_named(ty, "ObjectRef") {
        Kind::ObjectRef
    } else if is_named(ty, "RemoteObject") {
        Kind::Remote
    } else {
        Kind::Plain
    }
}

/// `T` if `ty` is `Result<T, ...>`; an error for a `Result` without type
/// arguments.
pub fn result_ok(ty: &Type) -> syn::Result<Option<Type>> {
    let Some(seg) = last_segment(ty) else {
        return Ok(None);
    };
    if seg.ident != "Result" {
        return Ok(None);
    }
    match type_args(seg).first() {
        Some(t) => Ok(Some((*t).clone())),
        None => Err(syn::Error::new_spanned(
            ty,
            "write the result type out, e.g. `Result<String, CallError>`: the macro reads the value type from it",
        )),
    }
}

/// The VPy-ish name of `ty` in a signature.
pub fn vpy_name(ty: &Type) -> String {
    let ty = strip(ty);
    match ty {
        Type::Reference(r) => vpy_name(&r.elem),
        Type::Tuple(t) if t.elems.is_empty() => "none".to_owned(),
        Type::Tuple(_) | Type::Array(_) | Type::Slice(_) => "tuple".to_owned(),
        Type::Path(_) => {
            if is_dyn_object(ty) {
                return "object".to_owned();
            }
            let Some(seg) = last_segment(ty) else {
                return "any".to_owned();
            };
            let args = type_args(seg);
            let name = seg.ident.to_string();
            match (name.as_str(), args.as_slice()) {
                ("String" | "str" | "char" | "Cow" | "PathBuf", _) => "str".to_owned(),
                (
                    "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64"
                    | "u128" | "usize" | "BigInt" | "BigUint" | "NonZeroU32" | "NonZeroU64"
                    | "NonZeroUsize",
                    _,
                ) => "int".to_owned(),
                ("f32" | "f64", _) => "float".to_owned(),
                ("bool", _) => "bool".to_owned(),
                ("Bytes" | "BytesMut" | "ByteBuf", _) => "bytes".to_owned(),
                ("Vec", [t]) if is_named(t, "u8") => "bytes".to_owned(),
                ("Vec" | "VecDeque" | "HashSet" | "BTreeSet" | "LinkedList" | "BinaryHeap", _) => {
                    "tuple".to_owned()
                }
                ("HashMap" | "BTreeMap", _) => "dict".to_owned(),
                ("Option", [t]) => {
                    let inner = vpy_name(t);
                    if inner == "any" || inner == "none" || inner.ends_with("|none") {
                        inner
                    } else {
                        format!("{inner}|none")
                    }
                }
                ("Result", [t, ..]) => vpy_name(t),
                ("Arc" | "Box" | "Rc", [t]) => vpy_name(t),
                ("ObjectRef" | "RemoteObject", _) => "object".to_owned(),
                _ => "any".to_owned(),
            }
        }
        _ => "any".to_owned(),
    }
}

/// The type the client returns for a method returning `ty` (of kind
/// `kind`): objects come back as proxies, borrowed results as owned ones.
pub fn client_return(ty: &Type, kind: Kind, krate: &syn::Path) -> Type {
    match kind {
        Kind::Object | Kind::Remote => syn::parse_quote!(#krate::link::RemoteObject),
        Kind::ObjectRef => syn::parse_quote!(#krate::link::ObjectRef),
        Kind::Plain => match strip(ty) {
            Type::Reference(r) => match strip(&r.elem) {
                Type::Path(p) if p.path.is_ident("str") => syn::parse_quote!(::std::string::String),
                Type::Slice(s) => {
                    let e = &s.elem;
                    syn::parse_quote!(::std::vec::Vec<#e>)
                }
                other => other.clone(),
            },
            other => other.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn vpy_names() {
        let cases: Vec<(Type, &str)> = vec![
            (parse_quote!(String), "str"),
            (parse_quote!(&'static str), "str"),
            (parse_quote!(u64), "int"),
            (parse_quote!(num_bigint::BigInt), "int"),
            (parse_quote!(f64), "float"),
            (parse_quote!(bool), "bool"),
            (parse_quote!(Vec<u8>), "bytes"),
            (parse_quote!(bytes::Bytes), "bytes"),
            (parse_quote!(Vec<String>), "tuple"),
            (parse_quote!((i64, String)), "tuple"),
            (parse_quote!([u8; 4]), "tuple"),
            (
                parse_quote!(std::collections::BTreeMap<String, i64>),
                "dict",
            ),
            (parse_quote!(Option<String>), "str|none"),
            (parse_quote!(Option<Option<i64>>), "int|none"),
            (parse_quote!(Option<Value>), "any"),
            (parse_quote!(()), "none"),
            (parse_quote!(Value), "any"),
            (parse_quote!(vole::link::ObjectRef), "object"),
            (parse_quote!(RemoteObject), "object"),
            (parse_quote!(Arc<dyn Object>), "object"),
            (
                parse_quote!(std::sync::Arc<dyn vole::link::Object>),
                "object",
            ),
            (parse_quote!(Arc<String>), "str"),
            (parse_quote!(Result<i64, CallError>), "int"),
            (parse_quote!(MyStruct), "any"),
        ];
        for (ty, want) in cases {
            assert_eq!(vpy_name(&ty), want, "{}", quote::quote!(#ty));
        }
    }

    #[test]
    fn kinds() {
        assert!(kind(&parse_quote!(Arc<dyn Object>)) == Kind::Object);
        assert!(kind(&parse_quote!(Arc<dyn Object + Send>)) == Kind::Object);
        assert!(kind(&parse_quote!(Arc<Object>)) == Kind::Plain);
        assert!(kind(&parse_quote!(RemoteObject)) == Kind::Remote);
        assert!(kind(&parse_quote!(link::ObjectRef)) == Kind::ObjectRef);
        assert!(kind(&parse_quote!(Value)) == Kind::Plain);
        assert!(is_context(&parse_quote!(&CallContext)));
        assert!(is_context(&parse_quote!(vole::link::CallContext)));
        assert!(!is_context(&parse_quote!(&mut CallContext)));
    }
}
