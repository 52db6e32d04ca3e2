// TLOK Workflow tab (A1111 1.10, Forge). Generate goes through the WebUI's progress bar; Ctrl+Enter, Alt+Enter
// and Esc work through the WebUI's own key handler (script.js), which finds our *_generate/_interrupt/_skip.

// Generate (and Run batch): hide Generate, poll /internal/progress into our gallery, hand the task id to the
// server. gradio passes the button's inputs followed by its outputs; `inputs` (from ui.submit_js) says how many are
// inputs, and one value per input is returned (Forge requires it).
function tlok_workflow_submit(inputs, args) {
    showSubmitButtons('tlok_workflow', false);
    var id = randomId();
    localSet("tlok_workflow_task_id", id);
    requestProgress(id, gradioApp().getElementById('tlok_workflow_gallery_container'),
        gradioApp().getElementById('tlok_workflow_gallery'), function() {
            showSubmitButtons('tlok_workflow', true);
            localRemove("tlok_workflow_task_id");
        });
    var res = Array.from(args).slice(0, inputs);
    res[0] = id;
    return res;
}

// After Generate the WebUI's gallery preview opens on the first image, while the infotext shows the last stage:
// select the last stage's thumbnail once the gallery holds every stage (a click, so the WebUI's own listener shows
// its infotext too). `info` is the run's generation info JSON, one infotext per stage.
function tlok_workflow_select_last(info) {
    var count = 0;
    try {
        count = JSON.parse(info || "{}").infotexts.length;
    } catch (e) {
        count = 0;
    }
    var tries = 0;
    (function pick() {
        var thumbnails = gradioApp().querySelectorAll('#tlok_workflow_gallery .thumbnail-item.thumbnail-small');
        if (count && thumbnails.length === count) {
            if (!thumbnails[count - 1].classList.contains('selected')) {
                thumbnails[count - 1].click();
            }
        } else if (count && tries++ < 50) {   // the images are still arriving
            setTimeout(pick, 100);
        }
    })();
    return [];
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

// Hover hints: the panel writes them (from the recipe schema's descriptions) into #tlok_workflow_hints.
// A click on a gallery image shows that stage's infotext, through the WebUI's own mechanism for txt2img.
onUiLoaded(function() {
    var app = gradioApp();
    if (typeof attachGalleryListeners === "function") {
        attachGalleryListeners("tlok_workflow");
    }
    var holder = app.getElementById('tlok_workflow_hints');
    if (!holder) {
        return;
    }
    var hints = JSON.parse(holder.dataset.hints || "{}");
    for (var id in hints) {
        var element = app.getElementById(id);
        if (element) {
            element.title = hints[id];
        }
    }
});

if (typeof titles !== "undefined") {
    titles["🌀"] = "Send image and prompt to the TLOK Workflow tab.";
    titles["Export"] = "Write the recipe these settings make as JSON into the box.";
    titles["Import"] = "Set the controls from the recipe JSON in the box.";
    titles["Run batch"] = "Run the chain from its style pass over every image of the input folder, each checkpoint loaded once.";
}
