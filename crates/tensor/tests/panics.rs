//! Shape mistakes are programmer errors that panic, and the panic names the caller's line, not a line inside the
//! crate (the crate docs promise this). Its own test binary: it installs a panic hook.

use std::sync::{Arc, Mutex};

use strata_tensor::Tensor;

/// The file of the panic location of `f`.
fn panic_file(f: impl FnOnce()) -> String {
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&seen);
    std::panic::set_hook(Box::new(move |info| {
        *sink.lock().unwrap() = info.location().map(|l| l.file().to_string()).unwrap_or_default();
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    assert!(result.is_err(), "expected a panic");
    seen.lock().unwrap().clone()
}

#[test]
fn broadcast_panics_point_at_the_caller() {
    let a = Tensor::<f32>::zeros(&[2, 3]);
    let b = Tensor::<f32>::zeros(&[4]);
    for (name, file) in [
        ("a + b", panic_file(|| drop(&a + &b))),
        ("a - b", panic_file(|| drop(&a - &b))),
        ("a * b", panic_file(|| drop(&a * &b))),
        ("a / b", panic_file(|| drop(&a / &b))),
        ("a.maximum(b)", panic_file(|| drop(a.maximum(&b)))),
        ("a.matmul(b)", panic_file(|| drop(a.matmul(&b)))),
        ("b.broadcast_to", panic_file(|| drop(b.broadcast_to(&[2, 3])))),
    ] {
        assert!(file.ends_with("tests/panics.rs"), "{name} panicked at {file}, not at the caller");
    }
}
