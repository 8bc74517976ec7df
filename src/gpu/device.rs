//! Adapter selection: which GPU wgtrain runs on, with what features and limits.

use super::GpuError;

/// How the user narrows the choice of adapter (`--backend`, `--adapter`, or
/// WGTRAIN_BACKEND / WGTRAIN_ADAPTER).
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// vulkan, metal, dx12 or gl; None tries every backend wgpu was built with.
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter's name.
    pub name: Option<String>,
}

impl AdapterChoice {
    /// Reads WGTRAIN_BACKEND and WGTRAIN_ADAPTER.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self { backend: var("WGTRAIN_BACKEND"), name: var("WGTRAIN_ADAPTER") }
    }

    fn backends(&self) -> Result<wgpu::Backends, GpuError> {
        Ok(match self.backend.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => wgpu::Backends::all(),
            Some("vulkan") => wgpu::Backends::VULKAN,
            Some("metal") => wgpu::Backends::METAL,
            Some("dx12") => wgpu::Backends::DX12,
            Some("gl") => wgpu::Backends::GL,
            Some(other) => return Err(GpuError::UnknownBackend(other.to_string())),
        })
    }
}

/// Every adapter wgpu can see on the chosen backends.
pub fn list_adapters(choice: &AdapterChoice) -> Result<Vec<wgpu::Adapter>, GpuError> {
    let backends = choice.backends()?;
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    Ok(pollster::block_on(instance.enumerate_adapters(backends)))
}

/// Discrete GPUs first, then integrated, then virtual, then software (lavapipe, llvmpipe, WARP).
/// Within a type, Vulkan, Metal and DX12 come before GL.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = u8::from(info.backend == wgpu::Backend::Gl);
    (ty, backend)
}

/// Picks the best adapter that matches the user's choice.
pub fn select_adapter(choice: &AdapterChoice) -> Result<wgpu::Adapter, GpuError> {
    let mut adapters = list_adapters(choice)?;
    if let Some(name) = &choice.name {
        let needle = name.to_lowercase();
        let seen: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
        if adapters.is_empty() {
            return Err(GpuError::NoMatchingAdapter { wanted: name.clone(), seen });
        }
    }
    adapters.sort_by_key(|a| rank(&a.get_info()));
    adapters.into_iter().next().ok_or(GpuError::NoAdapter)
}

/// The adapter of MPI rank `local_rank` (its rank among the processes of its machine): with
/// several adapters as good as the best (several GPUs of a kind), rank r takes the
/// (r mod count)-th of them; with one, every rank shares it. --adapter still filters first.
pub fn select_adapter_for_rank(choice: &AdapterChoice, local_rank: usize) -> Result<wgpu::Adapter, GpuError> {
    let best = rank(&select_adapter(choice)?.get_info());
    let mut adapters = list_adapters(choice)?;
    if let Some(name) = &choice.name {
        let needle = name.to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
    }
    adapters.retain(|a| rank(&a.get_info()) == best);
    adapters.sort_by_key(|a| {
        let i = a.get_info();
        (i.name, i.device, i.vendor)
    });
    let n = adapters.len().max(1);
    adapters.into_iter().nth(local_rank % n).ok_or(GpuError::NoAdapter)
}

/// The features wgtrain asks for when the adapter has them.
pub fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY
}

/// One line per feature and limit that matters to wgtrain, for `wgtrain adapters` and logs.
pub fn describe(adapter: &wgpu::Adapter) -> String {
    let info = adapter.get_info();
    let f = adapter.features();
    let l = adapter.limits();
    let yes = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
    let mib = |x: u64| x as f64 / (1u64 << 20) as f64;
    format!(
        "{name}\n  backend {backend:?}, type {ty:?}, driver {driver} {driver_info}\n  \
         features: SHADER_F16 {f16}, SUBGROUP {sg} (sizes {sgmin}..{sgmax}), TIMESTAMP_QUERY {ts}\n  \
         limits: max storage binding {bind:.0} MiB, max buffer {buf:.0} MiB, \
         storage buffers per stage {sbuf}, workgroup invocations {inv}, \
         workgroup memory {wgm} KiB, workgroups per dimension {wgd}, \
         storage offset alignment {align} B\n  \
         cooperative matrices: {coop}",
        name = info.name,
        backend = info.backend,
        ty = info.device_type,
        driver = info.driver,
        driver_info = info.driver_info,
        f16 = yes(wgpu::Features::SHADER_F16),
        sg = yes(wgpu::Features::SUBGROUP),
        sgmin = info.subgroup_min_size,
        sgmax = info.subgroup_max_size,
        ts = yes(wgpu::Features::TIMESTAMP_QUERY),
        bind = mib(l.max_storage_buffer_binding_size),
        buf = mib(l.max_buffer_size),
        sbuf = l.max_storage_buffers_per_shader_stage,
        inv = l.max_compute_invocations_per_workgroup,
        wgm = l.max_compute_workgroup_storage_size / 1024,
        wgd = l.max_compute_workgroups_per_dimension,
        align = l.min_storage_buffer_offset_alignment,
        coop = describe_coop(adapter),
    )
}

/// The adapter's cooperative-matrix configurations, M×N×K A/B→C, or "none".
fn describe_coop(adapter: &wgpu::Adapter) -> String {
    let props = adapter.cooperative_matrix_properties();
    if props.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = props
        .iter()
        .map(|p| format!("{}x{}x{} {:?}->{:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type))
        .collect();
    let off = if coop_feature_on(adapter) { "" } else { " (listed, but the driver turns the feature off)" };
    list.join(", ") + off
}

/// The fragment sizes M = N = K, among those wgtrain's coop kernels are written for (8 and 16),
/// of the cooperative matrices with f16 inputs and an f32 accumulator that the adapter lists
/// (VK_KHR_cooperative_matrix, Metal simdgroup matrices): what `auto` tuning may pick.
pub fn coop_fragments(adapter: &wgpu::Adapter) -> Vec<u32> {
    use wgpu::CooperativeScalarType as S;
    let props = adapter.cooperative_matrix_properties();
    let listed = |n: u32| {
        props
            .iter()
            .any(|p| p.m_size == n && p.n_size == n && p.k_size == n && p.ab_type == S::F16 && p.cr_type == S::F32)
    };
    [8, 16].into_iter().filter(|&n| listed(n)).collect()
}

/// Whether the driver turns cooperative matrices on, where the adapter lists them. lavapipe
/// 26 at 128-bit vectors lists the extension and its shapes with the `cooperativeMatrix`
/// feature 0; wgpu-hal 30 enables the feature from the list alone, and then panics when
/// vkCreateDevice refuses it, so the device must not ask. Back ends other than Vulkan: true.
pub fn coop_feature_on(adapter: &wgpu::Adapter) -> bool {
    #[cfg(any(windows, all(unix, not(target_vendor = "apple"))))]
    {
        use ash::vk;
        // SAFETY: reads the physical device's features through wgpu's own Vulkan instance;
        // nothing is created, and nothing outlives the call.
        let Some(hal) = (unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }) else { return true };
        let instance = hal.shared_instance();
        let v11 = vk::API_VERSION_1_1;
        if instance.instance_api_version() < v11 || hal.physical_device_capabilities().properties().api_version < v11 {
            return false;
        }
        let mut coop = vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default();
        let mut features = vk::PhysicalDeviceFeatures2::default().push_next(&mut coop);
        // SAFETY: a Vulkan 1.1 instance and device (checked above), a valid features chain.
        unsafe { instance.raw_instance().get_physical_device_features2(hal.raw_physical_device(), &mut features) };
        coop.cooperative_matrix == vk::TRUE
    }
    #[cfg(not(any(windows, all(unix, not(target_vendor = "apple")))))]
    {
        let _ = adapter;
        true
    }
}

/// The adapter's fast f16 matrix units, described, if it has them: cooperative matrices of a
/// shape the coop kernels take (`coop_fragments`) on a GPU. A CPU adapter's (lavapipe 26's)
/// are loops like any other kernel's, so `--precision auto` stays f32 there.
pub fn f16_matrix_units(adapter: &wgpu::Adapter) -> Option<String> {
    let frags = coop_fragments(adapter);
    if frags.is_empty() || adapter.get_info().device_type == wgpu::DeviceType::Cpu {
        return None;
    }
    let shapes: Vec<String> = frags.iter().map(|n| format!("{n}×{n}×{n}")).collect();
    Some(format!("{} f16 cooperative matrices with f32 accumulate", shapes.join(" and ")))
}

/// Features wgtrain never asks of a device of `backend`, because naga cannot write what its
/// shaders do with them in that back end's language (tests/translate.rs finds which): GLSL has
/// no 16-bit floats, and neither HLSL nor GLSL has cooperative matrices. A kernel that needs
/// one is then never built there: the run takes the path without it (f32, no coop matmul).
pub fn withheld_features(backend: wgpu::Backend) -> wgpu::Features {
    match backend {
        wgpu::Backend::Gl => wgpu::Features::SHADER_F16 | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
        wgpu::Backend::Dx12 => wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
        _ => wgpu::Features::empty(),
    }
}
