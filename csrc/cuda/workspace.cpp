// AscentWorkspace: the device-resident state of one batched ascent (float32, N images of
// (3, H, W)). The image, its best iterate, the gradient, the step's ping-pong buffers and every
// scratch of the ascent kernels are allocated once, when the workspace is made; a step then runs
// on the device with no allocation, no transfer of the image and no synchronisation beyond the
// N step sizes and flags it takes from the host and the N sums of squares it gives back.
//
// The model input and its gradient may be any device arrays (__cuda_array_interface__: e.g.
// ONNX Runtime OrtValues on the CUDA provider, wrapped): to_input() writes the (jittered,
// preprocessed) image into one, grad_from_input() reads the gradient from the other.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "arrays.h"
#include "common/front.h"
#include "common/gaussian.h"
#include "device_memory.h"
#include "kernels.h"

namespace pydevis::cuda {
namespace {

using ::pydevis::shape_str;

class AscentWorkspace {
public:
    AscentWorkspace(const Ints& shape, const py::array_t<double, py::array::c_style>& lo,
                    const py::array_t<double, py::array::c_style>& hi, int device)
        : shape_(shape), device_(device) {
        CHECK_LEN(shape, 4, "shape");
        check_all_in_range(shape, 1, "shape");
        PYDEVIS_CHECK(shape[1] == 3, "shape: ", shape_str(shape), " is not (N, 3, H, W)");
        per_image_ = checked_numel(shape, "shape") / shape[0];
        f64_vector_front(Ints(lo.shape(), lo.shape() + lo.ndim()), "lo", 3, kPerChannel, shape);
        f64_vector_front(Ints(hi.shape(), hi.shape() + hi.ndim()), "hi", 3, kPerChannel, shape);
        DeviceGuard guard(device_);
        const int64_t N = shape[0], HW = shape[2] * shape[3];
        const size_t img = static_cast<size_t>(N * per_image_) * sizeof(float);
        for (auto* b : {&v_, &best_, &g_, &t1_, &t2_}) *b = DeviceBuffer(img);
        blur_tmp_ = DeviceBuffer(static_cast<size_t>(N * per_image_) * sizeof(double));
        clip_ = DeviceBuffer(static_cast<size_t>(clip_small_scratch(N, HW)) * sizeof(double));
        eta_ = DeviceBuffer(static_cast<size_t>(N) * sizeof(double));
        sumsq_ = DeviceBuffer(static_cast<size_t>(N) * sizeof(double));
        bounds_ = DeviceBuffer(6 * sizeof(double));
        PYDEVIS_CUDA_CHECK(cudaMemcpy(bounds_.get(), lo.data(), 3 * sizeof(double),
                                      cudaMemcpyHostToDevice));
        PYDEVIS_CUDA_CHECK(cudaMemcpy(bounds_.as<double>() + 3, hi.data(), 3 * sizeof(double),
                                      cudaMemcpyHostToDevice));
        PYDEVIS_CUDA_CHECK(cudaMemset(g_.get(), 0, img));
    }

    py::tuple shape() const { return py::cast(shape_); }
    int device() const { return device_; }

    // Views of the buffers (the binding keeps the workspace alive while a view is).
    std::unique_ptr<DeviceArray> view(const DeviceBuffer& b) const {
        return std::make_unique<DeviceArray>(b.get(), shape_, DType::f32, device_, false);
    }
    std::unique_ptr<DeviceArray> image() const { return view(v_); }
    std::unique_ptr<DeviceArray> best() const { return view(best_); }
    std::unique_ptr<DeviceArray> grad() const { return view(g_); }

    void set_pixel_map(const std::vector<float>& A, const std::vector<float>& center,
                       const std::vector<float>& mean, const std::vector<float>& std) {
        const size_t c = mean.size();
        PYDEVIS_CHECK(c == 1 || c == 3, "mean: expected 1 or 3 values, got ", c);
        PYDEVIS_CHECK(std.size() == c, "std: expected ", c, " values, got ", std.size());
        PYDEVIS_CHECK(A.size() == 3 * c, "A: expected ", 3 * c, " values, got ", A.size());
        PYDEVIS_CHECK(center.size() == 3, "center: expected 3 values, got ", center.size());
        map_ = PixelMap{};
        map_.channels = static_cast<int>(c);
        std::copy(A.begin(), A.end(), map_.A);
        std::copy(center.begin(), center.end(), map_.center);
        std::copy(mean.begin(), mean.end(), map_.mean);
        std::copy(std.begin(), std.end(), map_.std);
        has_map_ = true;
    }

    // x (N, channels, H, W), a float32 device array: the preprocessed image rolled by (dy, dx).
    void to_input_py(const py::object& x, int64_t dy, int64_t dx) {
        const Arg a = device_arg(x, "x", map_channels());
        py::gil_scoped_release nogil;
        DeviceGuard guard(device_);
        to_input(v_.as<const float>(), const_cast<float*>(static_cast<const float*>(a.ptr)),
                 map_, shape_[0], shape_[2], shape_[3], dy, dx, nullptr);
        // x is read next by another stream (ONNX Runtime's): finished when this returns
        PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    }

    // The gradient g (N, 3, H, W) from the model input's gradient gx, shifted back.
    void grad_from_input_py(const py::object& gx, int64_t dy, int64_t dx) {
        const Arg a = device_arg(gx, "gx", map_channels());
        py::gil_scoped_release nogil;
        DeviceGuard guard(device_);
        from_input(static_cast<const float*>(a.ptr), g_.as<float>(), map_, shape_[0], shape_[2],
                   shape_[3], dy, dx, nullptr);
        // gx may be written next by another stream: read when this returns
        PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    }

    // Per image: the sum of the gradient's squares (float64), the only copy back of a step.
    py::array_t<double> grad_sumsq() {
        py::array_t<double> out(shape_[0]);
        double* dst = out.mutable_data();
        py::gil_scoped_release nogil;
        DeviceGuard guard(device_);
        row_sumsq<float>(g_.as<const float>(), sumsq_.as<double>(), shape_[0], per_image_,
                         nullptr);
        PYDEVIS_CUDA_CHECK(cudaMemcpy(dst, sumsq_.get(), shape_[0] * sizeof(double),
                                      cudaMemcpyDeviceToHost));
        return out;
    }

    // One ascent step of the active images: v <- ascent_step(v, g, ...) (docs/kernels.md).
    void step(const py::array_t<double, py::array::c_style>& eta, double decay, double sigma,
              double norm_pct, double contrib_pct, const std::vector<bool>& active) {
        const int64_t N = shape_[0], C = 3, H = shape_[2], W = shape_[3], HW = H * W;
        f64_vector_front(Ints(eta.shape(), eta.shape() + eta.ndim()), "eta", N, kPerImage, shape_);
        PYDEVIS_CHECK(int64_t(active.size()) == N, "active: expected ", N, " flags, got ",
                      active.size());
        check_blur_sigma(sigma, "blur_sigma");
        check_percentile(norm_pct, "norm_pct");
        check_percentile(contrib_pct, "contrib_pct");
        const std::vector<double> w = sigma > 0 ? gaussian_weights(sigma) : std::vector<double>();
        const double* e = eta.data();
        py::gil_scoped_release nogil;
        DeviceGuard guard(device_);
        const cudaStream_t s = nullptr;
        if (w.size() * sizeof(double) > weights_.bytes()) {
            weights_ = DeviceBuffer(w.size() * sizeof(double));
        }
        PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(eta_.get(), e, N * sizeof(double),
                                           cudaMemcpyHostToDevice, s));
        if (!w.empty()) {
            PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(weights_.get(), w.data(), w.size() * sizeof(double),
                                               cudaMemcpyHostToDevice, s));
        }
        float *a = t1_.as<float>(), *b = t2_.as<float>();
        ascent_update<float>(v_.as<const float>(), g_.as<const float>(), eta_.as<const double>(), a,
                             N, per_image_, decay, s);
        if (!w.empty()) {
            gaussian_blur<float>(a, b, blur_tmp_.as<double>(), weights_.as<const double>(),
                                 (int64_t(w.size()) - 1) / 2, N * C, H, W, s);
            std::swap(a, b);
        }
        if (norm_pct > 0) {
            clip_small<float>(a, nullptr, b, clip_.as<double>(), N, C, HW, norm_pct, s);
            std::swap(a, b);
        }
        if (contrib_pct > 0) {
            clip_small<float>(a, g_.as<const float>(), b, clip_.as<double>(), N, C, HW,
                              contrib_pct, s);
            std::swap(a, b);
        }
        clamp_channels<float>(a, bounds_.as<const double>(), bounds_.as<const double>() + 3, b,
                              N, C, HW, s);
        const size_t row = static_cast<size_t>(per_image_) * sizeof(float);
        for (int64_t n = 0; n < N; ++n) {  // the inactive images keep their value
            if (active[n]) {
                PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(v_.as<char>() + n * row,
                                                   reinterpret_cast<char*>(b) + n * row, row,
                                                   cudaMemcpyDeviceToDevice, s));
            }
        }
        // the host arrays read by the copies above (eta, w) must outlive them
        PYDEVIS_CUDA_CHECK(cudaStreamSynchronize(s));
    }

    // best[n] <- image[n] where mask[n].
    void keep_best(const std::vector<bool>& mask) { copy_rows(best_, v_, mask); }
    // image[n] <- best[n] where mask[n].
    void restore_best(const std::vector<bool>& mask) { copy_rows(v_, best_, mask); }

private:
    int map_channels() const {
        PYDEVIS_CHECK(has_map_, "set_pixel_map() first: the workspace has no pixel map");
        return map_.channels;
    }

    // A float32 device array of shape (N, channels, H, W) on this workspace's device.
    Arg device_arg(const py::object& obj, const char* name, int channels) const {
        Arg a = parse(obj, name);
        PYDEVIS_CHECK(a.on_device, name, ": must be a device array (__cuda_array_interface__)");
        PYDEVIS_CHECK(a.dtype == DType::f32, name, ": dtype ", dtype_name(a.dtype),
                      " is not float32");
        const Ints want{shape_[0], channels, shape_[2], shape_[3]};
        check_same_shape(a.shape, name, want, "expected");
        PYDEVIS_CHECK(a.device == device_, name, ": on CUDA device ", a.device,
                      " but the workspace is on device ", device_);
        sync_producers({&a});
        return a;
    }

    void copy_rows(DeviceBuffer& dst, const DeviceBuffer& src, const std::vector<bool>& mask) {
        PYDEVIS_CHECK(int64_t(mask.size()) == shape_[0], "mask: expected ", shape_[0],
                      " flags, got ", mask.size());
        py::gil_scoped_release nogil;
        DeviceGuard guard(device_);
        const size_t row = static_cast<size_t>(per_image_) * sizeof(float);
        for (size_t n = 0; n < mask.size(); ++n) {
            if (!mask[n]) continue;
            PYDEVIS_CUDA_CHECK(cudaMemcpyAsync(dst.as<char>() + n * row, src.as<char>() + n * row,
                                               row, cudaMemcpyDeviceToDevice, nullptr));
        }
    }

    Ints shape_;
    int device_;
    int64_t per_image_ = 0;
    DeviceBuffer v_, best_, g_, t1_, t2_, blur_tmp_, clip_, eta_, sumsq_, bounds_, weights_;
    PixelMap map_{};
    bool has_map_ = false;
};

}  // namespace

void bind_workspace(py::module_& m) {
    using py::arg;
    py::class_<AscentWorkspace>(
        m, "AscentWorkspace",
        "The device-resident state of one batched float32 ascent of N images (N, 3, H, W): "
        "image, best iterate, gradient and every scratch allocated once; step() runs on the "
        "device with no allocation and no transfer of the image.")
        .def(py::init<const Ints&, const py::array_t<double, py::array::c_style>&,
                      const py::array_t<double, py::array::c_style>&, int>(),
             arg("shape"), arg("lo"), arg("hi"), arg("device") = 0)
        .def_property_readonly("shape", &AscentWorkspace::shape)
        .def_property_readonly("device", &AscentWorkspace::device)
        .def("image", &AscentWorkspace::image, py::keep_alive<0, 1>(),
             "The image: a DeviceArray view (copy_from() sets it, to_host() reads it).")
        .def("best", &AscentWorkspace::best, py::keep_alive<0, 1>(), "The best iterate (view).")
        .def("grad", &AscentWorkspace::grad, py::keep_alive<0, 1>(), "The gradient (view).")
        .def("set_pixel_map", &AscentWorkspace::set_pixel_map, arg("A"), arg("center"),
             arg("mean"), arg("std"))
        .def("to_input", &AscentWorkspace::to_input_py, arg("x"), arg("dy") = 0, arg("dx") = 0)
        .def("grad_from_input", &AscentWorkspace::grad_from_input_py, arg("gx"), arg("dy") = 0,
             arg("dx") = 0)
        .def("grad_sumsq", &AscentWorkspace::grad_sumsq)
        .def("step", &AscentWorkspace::step, arg("eta"), arg("decay"), arg("blur_sigma"),
             arg("norm_pct"), arg("contrib_pct"), arg("active"))
        .def("keep_best", &AscentWorkspace::keep_best, arg("mask"))
        .def("restore_best", &AscentWorkspace::restore_best, arg("mask"));
}

}  // namespace pydevis::cuda
