//! Parsing and checking: the attribute and the `impl` block, as a model the
//! renderer turns into code.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ImplItem, ItemImpl, LitStr, Pat, ReturnType, Type};

use crate::types::{self, Kind};

/// A service: the attribute's settings, the block, its methods.
pub struct Service {
    /// The block, with `#[vole(...)]` attributes removed.
    pub item: ItemImpl,
    /// The `Self` type.
    pub self_ty: Type,
    /// The object's type name.
    pub name: String,
    /// The object's documentation.
    pub doc: Option<String>,
    /// The client type, if one is generated.
    pub client: Option<syn::Ident>,
    /// The path of the `vole` crate.
    pub krate: syn::Path,
    /// The service methods, in the block's order.
    pub methods: Vec<Method>,
}

/// One service method.
pub struct Method {
    /// The Rust name.
    pub ident: syn::Ident,
    /// The name on the wire.
    pub wire: String,
    /// Its doc comment.
    pub doc: Option<String>,
    /// `async fn`.
    pub is_async: bool,
    /// `#[vole(oneway)]`.
    pub oneway: bool,
    /// The parameters after `&self`.
    pub params: Vec<Param>,
    /// The return type.
    pub ret: Return,
    /// Where errors about the method point.
    pub span: Span,
}

/// A parameter.
pub struct Param {
    /// A name for signatures and the client (`argN` if the pattern has none).
    pub name: syn::Ident,
    /// Its type.
    pub ty: Type,
    /// What it is.
    pub role: Role,
}

/// What a parameter is.
pub enum Role {
    /// A wire argument of this kind.
    Arg(Kind),
    /// `#[vole(rest)]`: the remaining arguments.
    Rest,
    /// The call context, by value.
    Context,
    /// The call context, by reference.
    ContextRef,
}

/// What a method returns.
pub struct Return {
    /// `Result<T, E>` rather than `T`.
    pub fallible: bool,
    /// `T`, or `None` for `()`.
    pub value: Option<(Type, Kind)>,
}

/// An error spanning all of `tokens` (not only their first token).
fn err(tokens: impl quote::ToTokens, message: impl std::fmt::Display) -> syn::Error {
    syn::Error::new_spanned(tokens, message)
}

impl Service {
    /// Parses `#[vole::service(attr)] item`.
    pub fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<Service> {
        let mut name: Option<String> = None;
        let mut doc: Option<String> = None;
        let mut client: Option<Option<String>> = None;
        let mut krate: Option<syn::Path> = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                let s: LitStr = meta.value()?.parse()?;
                if s.value().is_empty() {
                    return Err(err(&s, "the service name must not be empty"));
                }
                name = Some(s.value());
            } else if meta.path.is_ident("doc") {
                let s: LitStr = meta.value()?.parse()?;
                doc = Some(s.value());
            } else if meta.path.is_ident("client") {
                let lit: syn::Lit = meta.value()?.parse()?;
                client = Some(match &lit {
                    syn::Lit::Str(s) => {
                        syn::parse_str::<syn::Ident>(&s.value()).map_err(|_| {
                            err(s, "`client` must name a type, e.g. \"GreeterClient\"")
                        })?;
                        Some(s.value())
                    }
                    syn::Lit::Bool(b) if !b.value => None,
                    _ => return Err(err(&lit, "`client` takes a type name or `false`")),
                });
            } else if meta.path.is_ident("crate") {
                let s: LitStr = meta.value()?.parse()?;
                krate = Some(s.parse()?);
            } else {
                return Err(meta.error(
                    "unknown argument: #[vole::service] takes `name = \"...\"`, `doc = \"...\"`, `client = \"...\"` and `crate = \"...\"`",
                ));
            }
            Ok(())
        });
        syn::parse::Parser::parse2(parser, attr)?;

        let mut item: ItemImpl = syn::parse2(item).map_err(|e| {
            syn::Error::new(
                e.span(),
                "#[vole::service] goes on an inherent `impl` block: `impl MyService { ... }`",
            )
        })?;
        if let Some((_, path, _)) = &item.trait_ {
            return Err(err(
                path,
                "#[vole::service] goes on an inherent `impl` block, not a trait implementation",
            ));
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            return Err(err(
                &item.generics,
                "#[vole::service] does not support generic `impl` blocks: implement it for a concrete type",
            ));
        }
        if let Some(u) = &item.unsafety {
            return Err(err(u, "#[vole::service] does not support `unsafe impl`"));
        }
        let self_ty = (*item.self_ty).clone();
        let type_ident = match &self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
            _ => None,
        }
        .ok_or_else(|| {
            err(
                &self_ty,
                "#[vole::service] needs a named type, such as `impl Greeter`",
            )
        })?;
        let name = name.unwrap_or_else(|| type_ident.to_string());
        let doc = doc.or_else(|| doc_of(&item.attrs));
        let client = match client {
            None => Some(syn::Ident::new(
                &format!("{type_ident}Client"),
                type_ident.span(),
            )),
            Some(None) => None,
            Some(Some(s)) => Some(syn::Ident::new(&s, Span::call_site())),
        };
        let krate = krate.unwrap_or_else(|| syn::parse_quote!(::vole));

        let mut methods = Vec::new();
        let mut errors: Option<syn::Error> = None;
        for it in &mut item.items {
            if let ImplItem::Fn(f) = it {
                match Method::parse(f) {
                    Ok(Some(m)) => methods.push(m),
                    Ok(None) => {}
                    Err(e) => match &mut errors {
                        Some(all) => all.combine(e),
                        None => errors = Some(e),
                    },
                }
            }
        }
        if let Some(e) = errors {
            return Err(e);
        }
        for (i, m) in methods.iter().enumerate() {
            if methods[..i].iter().any(|o| o.wire == m.wire) {
                return Err(syn::Error::new(
                    m.span,
                    format!("two methods are published as {:?}", m.wire),
                ));
            }
        }
        if let Some(c) = &client {
            for m in &methods {
                if ["new", "resolve", "remote", "into_remote"]
                    .contains(&m.ident.to_string().as_str())
                {
                    return Err(syn::Error::new(
                        m.ident.span(),
                        format!(
                            "a method named `{0}` clashes with `{c}::{0}`; rename the Rust method and keep the wire name with #[vole(name = \"{0}\")], or use `client = false`",
                            m.ident
                        ),
                    ));
                }
            }
        }
        Ok(Service {
            item,
            self_ty,
            name,
            doc,
            client,
            krate,
            methods,
        })
    }
}

/// `#[vole(...)]` settings of a method.
#[derive(Default)]
struct MethodAttrs {
    skip: bool,
    oneway: bool,
    name: Option<String>,
}

fn is_vole(a: &Attribute) -> bool {
    a.path().is_ident("vole")
}

fn method_attrs(attrs: &mut Vec<Attribute>) -> syn::Result<MethodAttrs> {
    let mut out = MethodAttrs::default();
    for a in attrs.iter().filter(|a| is_vole(a)) {
        a.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                out.skip = true;
            } else if meta.path.is_ident("oneway") {
                out.oneway = true;
            } else if meta.path.is_ident("name") {
                let s: LitStr = meta.value()?.parse()?;
                if s.value().is_empty() {
                    return Err(err(&s, "a method name must not be empty"));
                }
                out.name = Some(s.value());
            } else if meta.path.is_ident("rest") {
                return Err(meta.error("#[vole(rest)] goes on the last parameter, not the method"));
            } else {
                return Err(meta.error(
                    "unknown method attribute: #[vole(...)] takes `skip`, `oneway` and `name = \"...\"`",
                ));
            }
            Ok(())
        })?;
    }
    attrs.retain(|a| !is_vole(a));
    Ok(out)
}

fn param_is_rest(attrs: &mut Vec<Attribute>) -> syn::Result<bool> {
    let mut rest = false;
    for a in attrs.iter().filter(|a| is_vole(a)) {
        a.parse_nested_meta(|meta| {
            if meta.path.is_ident("rest") {
                rest = true;
                Ok(())
            } else {
                Err(meta.error("unknown parameter attribute: #[vole(...)] takes `rest`"))
            }
        })?;
    }
    attrs.retain(|a| !is_vole(a));
    Ok(rest)
}

/// The doc comment in `attrs`, as rustdoc reads it: one leading space of
/// each line dropped, lines joined, blank ends trimmed.
pub fn doc_of(attrs: &[Attribute]) -> Option<String> {
    let mut lines = Vec::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                let v = s.value();
                for line in v.split('\n') {
                    lines.push(line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned());
                }
            }
        }
    }
    let text = lines.join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl Method {
    /// The service method `f` is, if any; strips its `#[vole]` attributes.
    fn parse(f: &mut syn::ImplItemFn) -> syn::Result<Option<Method>> {
        let attrs = method_attrs(&mut f.attrs)?;
        // Strip parameter attributes whatever happens next, so that a
        // skipped method compiles too.
        let mut rest_flags = Vec::new();
        for input in f.sig.inputs.iter_mut() {
            if let FnArg::Typed(pt) = input {
                rest_flags.push(param_is_rest(&mut pt.attrs)?);
            }
        }
        if attrs.skip {
            return Ok(None);
        }
        let sig = &f.sig;
        let receiver = match sig.inputs.first() {
            Some(FnArg::Receiver(r)) => r,
            // Associated functions (constructors) are not methods.
            _ => return Ok(None),
        };
        if receiver.colon_token.is_some() {
            return Err(err(
                receiver,
                "a service method takes `&self`; typed receivers such as `self: Arc<Self>` are not supported",
            ));
        }
        match &receiver.reference {
            None => {
                return Err(err(
                    receiver,
                    "a service method takes `&self`, not `self` by value: the object serves many calls",
                ))
            }
            Some(_) if receiver.mutability.is_some() => {
                return Err(err(
                    receiver,
                    "a service method takes `&self`, not `&mut self`: calls run concurrently; keep mutable state behind a `Mutex`",
                ))
            }
            Some((_, Some(lt))) => {
                return Err(err(
                    lt,
                    "a service method takes plain `&self`, without a named lifetime",
                ))
            }
            Some((_, None)) => {}
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            return Err(err(
                &sig.generics,
                "service methods cannot be generic: the wire needs concrete argument types",
            ));
        }
        if let Some(u) = &sig.unsafety {
            return Err(err(u, "service methods cannot be `unsafe`"));
        }
        if let Some(abi) = &sig.abi {
            return Err(err(abi, "service methods cannot have an `extern` ABI"));
        }
        if let Some(v) = &sig.variadic {
            return Err(err(
                v,
                "service methods cannot be variadic; use #[vole(rest)] args: Vec<Value>",
            ));
        }

        let mut params = Vec::new();
        let typed: Vec<_> = sig
            .inputs
            .iter()
            .filter_map(|i| match i {
                FnArg::Typed(pt) => Some(pt),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let count = typed.len();
        for (i, (pt, rest)) in typed.into_iter().zip(rest_flags).enumerate() {
            let name = match &*pt.pat {
                Pat::Ident(pi) if pi.subpat.is_none() => {
                    let s = pi.ident.to_string();
                    let s = s.trim_start_matches('_');
                    if s.is_empty() {
                        syn::Ident::new(&format!("arg{}", i + 1), pi.ident.span())
                    } else {
                        syn::Ident::new(s, pi.ident.span())
                    }
                }
                _ => syn::Ident::new(&format!("arg{}", i + 1), pt.pat.span()),
            };
            let ty = (*pt.ty).clone();
            let role = if types::is_context(&ty) {
                if rest {
                    return Err(err(
                        pt,
                        "#[vole(rest)] takes the remaining wire arguments: `args: Vec<Value>`",
                    ));
                }
                if matches!(ty, Type::Reference(_)) {
                    Role::ContextRef
                } else {
                    Role::Context
                }
            } else {
                check_owned(&ty)?;
                if rest {
                    if i + 1 != count {
                        return Err(err(pt, "#[vole(rest)] goes on the last parameter"));
                    }
                    Role::Rest
                } else {
                    Role::Arg(types::kind(&ty))
                }
            };
            params.push(Param { name, ty, role });
        }
        // Distinct client parameter names.
        for i in 0..params.len() {
            if params[..i].iter().any(|p| p.name == params[i].name) {
                params[i].name = syn::Ident::new(&format!("arg{}", i + 1), params[i].name.span());
            }
        }

        let ret = match &sig.output {
            ReturnType::Default => Return {
                fallible: false,
                value: None,
            },
            ReturnType::Type(_, ty) => {
                check_return(ty)?;
                match types::result_ok(ty)? {
                    Some(ok) => Return {
                        fallible: true,
                        value: (!types::is_unit(&ok)).then(|| {
                            let k = types::kind(&ok);
                            (ok, k)
                        }),
                    },
                    None => Return {
                        fallible: false,
                        value: (!types::is_unit(ty)).then(|| ((**ty).clone(), types::kind(ty))),
                    },
                }
            }
        };
        if attrs.oneway && ret.value.is_some() {
            let span: &dyn quote::ToTokens = match &sig.output {
                ReturnType::Type(_, ty) => ty,
                ReturnType::Default => &sig.output,
            };
            return Err(err(
                span,
                "a #[vole(oneway)] method returns nothing (or `Result<(), E>`): its caller never sees a result",
            ));
        }
        Ok(Some(Method {
            ident: sig.ident.clone(),
            wire: attrs.name.unwrap_or_else(|| sig.ident.to_string()),
            doc: doc_of(&f.attrs),
            is_async: sig.asyncness.is_some(),
            oneway: attrs.oneway,
            params,
            ret,
            span: sig.ident.span(),
        }))
    }
}

/// Arguments outlive the call's future: no borrowed types, no `impl Trait`.
fn check_owned(ty: &Type) -> syn::Result<()> {
    match ty {
        Type::Reference(r) => Err(err(
            r,
            "service method arguments must be owned (e.g. `String`, not `&str`): they are decoded from the call and outlive it; only `&CallContext` may be borrowed",
        )),
        Type::ImplTrait(t) => Err(err(
            t,
            "service method arguments cannot be `impl Trait`: the wire needs a concrete type",
        )),
        Type::Infer(t) => Err(err(t, "service method arguments need a type")),
        Type::Paren(p) => check_owned(&p.elem),
        Type::Group(g) => check_owned(&g.elem),
        Type::Tuple(t) => t.elems.iter().try_for_each(check_owned),
        Type::Array(a) => check_owned(&a.elem),
        Type::Path(p) => {
            for seg in &p.path.segments {
                if let syn::PathArguments::AngleBracketed(ab) = &seg.arguments {
                    for a in &ab.args {
                        match a {
                            syn::GenericArgument::Type(t) => check_owned(t)?,
                            syn::GenericArgument::Lifetime(l) if l.ident != "static" => {
                                return Err(err(
                                    l,
                                    "service method arguments must be owned: no borrowed lifetimes",
                                ))
                            }
                            _ => {}
                        }
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Results are sent after the method returns: `impl Trait` cannot be named
/// by the client.
fn check_return(ty: &Type) -> syn::Result<()> {
    match ty {
        Type::ImplTrait(t) => Err(err(
            t,
            "service methods cannot return `impl Trait`: return a concrete type, or `Arc<dyn Object>` for an object",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_comments_read_as_rustdoc_does() {
        let item: syn::ItemFn = syn::parse_quote! {
            /// First line.
            ///
            ///   Indented.
            #[doc = " Last."]
            fn f() {}
        };
        assert_eq!(
            doc_of(&item.attrs).as_deref(),
            Some("First line.\n\n  Indented.\nLast.")
        );
        let bare: syn::ItemFn = syn::parse_quote! { fn f() {} };
        assert_eq!(doc_of(&bare.attrs), None);
    }
}
