// Package bench measures the stage server and the router the way users meet
// them: a client in another process over loopback, next to the physical
// limits measured in the same run (a raw ONNX Runtime loop on the same model
// and threads, a bare fasthttp reverse proxy for the router's hop). It
// reports ratios, never absolute times: the machines ipa is measured on are
// shared and noisy.
//
// `ipa bench` is a thin command over Run; the client and the proxy run as
// hidden ipa subcommands (ClientMain, ProxyMain) in child processes, and the
// stage servers and routers as the real `ipa stage` and `ipa router`.
package bench
