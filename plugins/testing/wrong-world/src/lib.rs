//! Not a mapper: it exports `init` but no `map`, so the host must refuse it
//! with a message that names the missing export.

wit_bindgen::generate!({
    inline: r#"
        package roster-test:wrong@0.1.0;
        world wrong {
            export init: func() -> string;
        }
    "#,
});

struct Wrong;

impl Guest for Wrong {
    fn init() -> String {
        "not a mapper".into()
    }
}

export!(Wrong);
