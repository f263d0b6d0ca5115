// Add, Sub, Mul, Div with ONNX multidirectional (numpy) broadcasting; float32, float64,
// int32, int64. Integer arithmetic wraps like ONNX Runtime (signed overflow is undefined in
// C++, so it is done in the unsigned type) and integer Div truncates.
#include <algorithm>
#include <type_traits>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

template <typename T>
using Unsigned = std::make_unsigned_t<T>;

struct AddOp {
    static constexpr const char* name = "Add";
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) return static_cast<T>(Unsigned<T>(a) + Unsigned<T>(b));
        else return a + b;
    }
};

struct SubOp {
    static constexpr const char* name = "Sub";
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) return static_cast<T>(Unsigned<T>(a) - Unsigned<T>(b));
        else return a - b;
    }
};

struct MulOp {
    static constexpr const char* name = "Mul";
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) return static_cast<T>(Unsigned<T>(a) * Unsigned<T>(b));
        else return a * b;
    }
};

struct DivOp {
    static constexpr const char* name = "Div";
    // The kernel rejects integer division by zero before the loop.
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) {
            if (b == -1) return static_cast<T>(Unsigned<T>(0) - Unsigned<T>(a));  // INT_MIN / -1 traps on x86
            return a / b;
        } else {
            return a / b;
        }
    }
};

// The output's dims with each input's element strides over them (0 where the input is
// broadcast), adjacent dims merged when both inputs walk them contiguously, so the innermost
// loop is as long as possible.
struct BroadcastLoop {
    std::vector<int64_t> dims, a_strides, b_strides;
};

BroadcastLoop plan_broadcast(const std::vector<int64_t>& out, const std::vector<int64_t>& a,
                             const std::vector<int64_t>& b) {
    auto strides_of = [&](const std::vector<int64_t>& in) {
        std::vector<int64_t> strides(out.size(), 0);
        const size_t skip = out.size() - in.size();
        int64_t s = 1;
        for (size_t i = in.size(); i-- > 0;) {
            if (in[i] != 1) strides[skip + i] = s;
            s *= in[i];
        }
        return strides;
    };
    const std::vector<int64_t> sa = strides_of(a), sb = strides_of(b);
    BroadcastLoop loop;
    for (size_t i = 0; i < out.size(); ++i) {
        if (out[i] == 1) continue;
        if (!loop.dims.empty() && loop.a_strides.back() == sa[i] * out[i] && loop.b_strides.back() == sb[i] * out[i]) {
            loop.dims.back() *= out[i];
            loop.a_strides.back() = sa[i];
            loop.b_strides.back() = sb[i];
        } else {
            loop.dims.push_back(out[i]);
            loop.a_strides.push_back(sa[i]);
            loop.b_strides.push_back(sb[i]);
        }
    }
    if (loop.dims.empty()) loop = BroadcastLoop{{1}, {0}, {0}};
    return loop;
}

template <typename T, typename Op>
void run_broadcast(const BroadcastLoop& loop, const T* a, const T* b, T* out, Op op) {
    const size_t outer_rank = loop.dims.size() - 1;
    const int64_t inner = loop.dims.back(), sa = loop.a_strides.back(), sb = loop.b_strides.back();
    int64_t outer = 1;
    for (size_t d = 0; d < outer_rank; ++d) outer *= loop.dims[d];
    std::vector<int64_t> index(outer_rank, 0);
    int64_t a_offset = 0, b_offset = 0;
    for (int64_t o = 0; o < outer; ++o, out += inner) {
        const T* pa = a + a_offset;
        const T* pb = b + b_offset;
        // The common stride patterns get their own loops so the compiler vectorizes them.
        if (sa == 1 && sb == 1) {
            for (int64_t j = 0; j < inner; ++j) out[j] = op(pa[j], pb[j]);
        } else if (sa == 0 && sb == 1) {
            const T va = *pa;
            for (int64_t j = 0; j < inner; ++j) out[j] = op(va, pb[j]);
        } else if (sa == 1 && sb == 0) {
            const T vb = *pb;
            for (int64_t j = 0; j < inner; ++j) out[j] = op(pa[j], vb);
        } else {
            for (int64_t j = 0; j < inner; ++j) out[j] = op(pa[j * sa], pb[j * sb]);
        }
        for (size_t d = outer_rank; d-- > 0;) {  // odometer step over the outer dims
            a_offset += loop.a_strides[d];
            b_offset += loop.b_strides[d];
            if (++index[d] < loop.dims[d]) break;
            a_offset -= loop.a_strides[d] * loop.dims[d];
            b_offset -= loop.b_strides[d] * loop.dims[d];
            index[d] = 0;
        }
    }
}

template <typename Op>
class BinaryKernel final : public NodeKernel {
public:
    explicit BinaryKernel(const Node& node) : NodeKernel(node) {
        // Opset < 7 broadcast by attribute (broadcast=1, axis); those semantics differ from numpy's.
        if (node.has_attribute("broadcast") || node.has_attribute("axis"))
            fail("legacy 'broadcast'/'axis' attributes (opset < 7) are not supported");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        if (a.dtype() != b.dtype())
            fail("inputs have different dtypes: A is " + dtype_to_string(a.dtype()) + ", B is " +
                 dtype_to_string(b.dtype()));
        std::vector<int64_t> out_shape;
        try {
            out_shape = broadcast_shapes(a.shape(), b.shape());
        } catch (const ValidationError&) {
            fail("input shapes " + shape_to_string(a.shape()) + " and " + shape_to_string(b.shape()) +
                 " cannot be broadcast");
        }
        Tensor y(out_shape, a.dtype());
        switch (a.dtype()) {
            case DType::Float32: run<float>(a, b, y); break;
            case DType::Float64: run<double>(a, b, y); break;
            case DType::Int32: run<int32_t>(a, b, y); break;
            case DType::Int64: run<int64_t>(a, b, y); break;
            default:
                fail("dtype " + dtype_to_string(a.dtype()) + " is not supported; this kernel takes Float32, "
                     "Float64, Int32 or Int64");
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    template <typename T>
    void run(const Tensor& a, const Tensor& b, Tensor& y) const {
        const T* bd = b.data_ptr<T>();
        if constexpr (std::is_same_v<Op, DivOp> && std::is_integral_v<T>) {
            if (std::find(bd, bd + b.num_elements(), T(0)) != bd + b.num_elements())
                fail("integer division by zero (divisor B " + shape_to_string(b.shape()) + " contains 0)");
        }
        run_broadcast(plan_broadcast(y.shape(), a.shape(), b.shape()), a.data_ptr<T>(), bd, y.data_ptr<T>(), Op{});
    }
};

void infer_binary(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(1)) return;
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (a.dtype != b.dtype)
        fail_node(ctx.node, "inputs have different dtypes: A is " + dtype_to_string(a.dtype) + ", B is " +
                                dtype_to_string(b.dtype));
    Shape out;
    try {
        out = broadcast_shapes(a.shape, b.shape);
    } catch (const ValidationError&) {
        fail_node(ctx.node, "input shapes " + shape_to_string(a.shape) + " and " + shape_to_string(b.shape) +
                                " cannot be broadcast");
    }
    ctx.set_output(0, a.dtype, std::move(out));
}

template <typename Op>
OpSchema binary_schema() {
    return OpSchema{Op::name, "", 7, 2, 2, 1, 1, infer_binary,
                    [](const KernelInfo& info) { return std::make_unique<BinaryKernel<Op>>(info.node); }};
}

}  // namespace

void register_elementwise_ops(OpTable& table) {
    table.add(binary_schema<AddOp>());
    table.add(binary_schema<SubOp>());
    table.add(binary_schema<MulOp>());
    table.add(binary_schema<DivOp>());
}

}  // namespace pyflame_rt::ops
