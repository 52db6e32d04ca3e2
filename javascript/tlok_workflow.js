// TLOK Workflow tab (A1111 1.10, Forge). Generate goes through the WebUI's progress bar; Ctrl+Enter, Alt+Enter
// and Esc work through the WebUI's own key handler (script.js), which finds our *_generate/_interrupt/_skip.

// Generate: hide Generate, poll /internal/progress into our gallery, hand the task id to the server.
function tlok_workflow_submit() {
    showSubmitButtons('tlok_workflow', false);
    var id = randomId();
    localSet("tlok_workflow_task_id", id);
    requestProgress(id, gradioApp().getElementById('tlok_workflow_gallery_container'),
        gradioApp().getElementById('tlok_workflow_gallery'), function() {
            showSubmitButtons('tlok_workflow', true);
            localRemove("tlok_workflow_task_id");
        });
    // gradio passes the inputs followed by the 4 output values; return one value per input (Forge requires it)
    var res = Array.from(arguments).slice(0, arguments.length - 4);
    res[0] = id;
    return res;
}

// "Send to TLOK Workflow": open our tab; found by position, since Forge adds and renames tabs.
function switch_to_tlok_workflow() {
    var app = gradioApp();
    var tabs = Array.from(app.querySelectorAll('#tabs > .tabitem'));
    var index = tabs.indexOf(app.getElementById('tab_tlok_workflow'));
    var buttons = app.querySelectorAll('#tabs > .tab-nav > button');
    if (!buttons.length) {
        buttons = app.querySelector('#tabs').querySelectorAll('button');
    }
    if (index >= 0 && buttons[index]) {
        buttons[index].click();
    }
    return Array.from(arguments);
}

// The WebUI's paste button calls recalculate_prompts_<tab>; our prompts are recomposed on the server.
function recalculate_prompts_tlok_workflow() {
    return Array.from(arguments);
}

(function() {
    if (typeof titles === "undefined") {
        return;
    }
    var hints = {
        "Subject": "Who is in the picture: Korra (gets the outfit's paired hairstyle), or free text such as 'Zendaya standing in a forest'.",
        "Outfit": "One of the model's 23 outfit tokens; choosing one also selects the hairstyle it was trained with. Free text works too.",
        "Hairstyle": "One of the model's hairstyle tokens. The outfit's own pair keeps the likeness best.",
        "Shot": "full-shot needs the 1536 upscale to look good; half-body and closeup stop at 1024.",
        "Medium": "'tlok artstyle' for the cartoon style, 'cosplay photo' to force a photo ('photo' alone is often too weak).",
        "Outfit weight": "Attention weight on the outfit phrase: 1.3 gives (wearing defa outfit:1.3).",
        "Extra words": "Words appended at the end of the prompt.",
        "Negative presets": "Always 'blur, vignette, instagram'; add 'photo, tlok artstyle' for photos, 'white skin', or 'tlok artstyle' to weaken the style.",
        "More negative words": "Added to the negative prompt.",
        "Prompt (composed; edit freely)": "Composed from the choices above. Your edits are used as they are until you change a choice.",
        "Recipe": "Sampler recipe of the model card: quick (Euler a 20), alternative (DPM++ 2M Karras), quality (LMS 120), CFG 4, hard case (denoise 0.8).",
        "Upscale ladder": "auto follows the shot (full-shot: 1024 then 1536); or write sizes such as 1024,1536.",
        "Face stage": "Redraw the face at 512 after this stage: last, off, or a stage label such as 1024.",
        "Base checkpoint (vanilla SD, txt2img)": "The vanilla SD 1.x model for the first picture (the card: generate in vanilla SD, then restyle).",
        "Style checkpoint (4elements)": "The 4elements-diffusion model used for the style pass, the upscale ladder and the face.",
        "Seed (-1 random)": "Seed of the first image; image i uses seed + i.",
        "Images": "How many images to make; each runs the whole chain, stage by stage.",
        "Start from image (optional: skips txt2img)": "Restyle this image instead of generating one: the chain starts at the style pass.",
        "Export": "Write the recipe these settings make as JSON into the box.",
        "Import": "Set the controls from the recipe JSON in the box.",
        "Input folder (or a glob, or a .txt list of files)": "Images to restyle and upscale: png, jpg, webp, tif. A glob such as /data/*.png, or a .txt file with one path per line, works too.",
        "Output folder (not inside the input folder)": "Each image's stages are saved here under its own name; a manifest lets the same batch continue after an interrupt or a crash.",
        "Include subfolders": "Also take images from subfolders, mirrored in the output folder.",
        "Keep only the final stage": "Save only each image's last stage (intermediates are removed when the batch is complete).",
        "Add each PNG's own prompt": "Append the prompt stored in each PNG's infotext (e.g. from a txt2img run) to the composed prompt.",
        "Run batch": "Run the chain from its style pass over every image of the input folder, each checkpoint loaded once.",
    };
    for (var key in hints) {
        titles[key] = hints[key];
    }
    titles["🌀"] = "Send image and prompt to the TLOK Workflow tab.";
})();
