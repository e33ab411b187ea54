// Command harness judges secureai objects the way GitOps tools do, for the Python tests:
//
//   - "health": an Argo CD Lua health check, run in gopher-lua (Lua 5.1) with the libraries
//     that Argo CD opens for resource.customizations.health.* in argocd-cm (useOpenLibs off:
//     package, base, table and a safe os with time/date registered under the table name, no
//     string, no math, no global os), `obj` as a global with every number a float, a
//     one-second deadline, and the returned table validated as Argo CD validates it;
//   - "kstatus": sigs.k8s.io/cli-utils' kstatus Compute, as Flux, cli-utils and Config Sync use it;
//   - "validate": the API server's own validators of label keys and values, DNS names and CIDRs,
//     the oracle of the operator's validators.
//
// Input on stdin: a JSON array of requests; output on stdout: a JSON array of results, in order.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type request struct {
	Op     string          `json:"op"`
	Script string          `json:"script,omitempty"`
	Object json.RawMessage `json:"object,omitempty"`
	What   string          `json:"what,omitempty"`
	Value  string          `json:"value,omitempty"`
}

type result struct {
	Status  string   `json:"status,omitempty"`
	Message string   `json:"message,omitempty"`
	Error   string   `json:"error,omitempty"`
	Errors  []string `json:"errors,omitempty"`
}

// Argo CD's health status codes (gitops-engine pkg/health).
var validHealth = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// safeOs is what Argo CD offers of the os library: time and date only.
func safeOs() map[string]lua.LGFunction {
	full := lua.NewState()
	defer full.Close()
	out := map[string]lua.LGFunction{}
	for _, name := range []string{"time", "date"} {
		fn := full.GetField(full.GetGlobal("os"), name).(*lua.LFunction)
		out[name] = fn.GFunction
	}
	return out
}

func newVM() *lua.LState {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	funcs := safeOs()
	openSafeOs := func(l *lua.LState) int {
		// Argo CD registers its safe os functions under the table library's name.
		l.Push(l.RegisterModule(lua.TabLibName, funcs))
		return 1
	}
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			panic(err)
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), funcs))
		return 1
	})
	return l
}

// toLua converts decoded JSON as Argo CD does: every number is a Lua number (float64).
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func health(script string, raw json.RawMessage) result {
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return result{Error: err.Error()}
	}
	l := newVM()
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return result{Error: err.Error()}
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return result{}
	case lua.LTTable:
	default:
		return result{Error: fmt.Sprintf("expect table output from Lua script, not %s", ret.Type())}
	}
	encoded, err := luajson.Encode(ret)
	if err != nil {
		return result{Error: err.Error()}
	}
	var hs struct {
		Status  string `json:"status,omitempty"`
		Message string `json:"message,omitempty"`
	}
	if err := json.Unmarshal(encoded, &hs); err != nil {
		return result{Error: err.Error()}
	}
	if !validHealth[hs.Status] {
		return result{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return result{Status: hs.Status, Message: hs.Message}
}

func kstatus(raw json.RawMessage) result {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return result{Error: err.Error()}
	}
	res, err := status.Compute(u)
	if err != nil {
		return result{Error: err.Error()}
	}
	return result{Status: res.Status.String(), Message: res.Message}
}

func validate(what, value string) result {
	var errs []string
	switch what {
	case "labelKey":
		errs = validation.IsQualifiedName(value)
	case "labelValue":
		errs = validation.IsValidLabelValue(value)
	case "dnsSubdomain":
		errs = validation.IsDNS1123Subdomain(value)
	case "dnsLabel":
		errs = validation.IsDNS1123Label(value)
	case "cidr":
		// NetworkPolicy ipBlock: a legacy field, strict since StrictIPCIDRValidation is on.
		for _, e := range validation.IsValidCIDRForLegacyField(field.NewPath("cidr"), value, true, nil) {
			errs = append(errs, e.Error())
		}
	case "quantity":
		if _, err := resource.ParseQuantity(value); err != nil {
			errs = append(errs, err.Error())
		}
	default:
		return result{Error: "unknown validator " + what}
	}
	if errs == nil {
		errs = []string{}
	}
	return result{Errors: errs}
}

func main() {
	var requests []request
	if err := json.NewDecoder(os.Stdin).Decode(&requests); err != nil {
		fmt.Fprintln(os.Stderr, "harness: bad input:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(requests))
	for _, req := range requests {
		switch req.Op {
		case "health":
			out = append(out, health(req.Script, req.Object))
		case "kstatus":
			out = append(out, kstatus(req.Object))
		case "validate":
			out = append(out, validate(req.What, req.Value))
		default:
			out = append(out, result{Error: "unknown op " + req.Op})
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}
